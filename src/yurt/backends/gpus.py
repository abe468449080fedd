"""Which GPUs of this machine each local runner holds: exclusive, released when it exits.

``GpuAllocator`` is pure bookkeeping over a fixed inventory (no NVML, no I/O, no clock), so that
tests build one from made-up GPUs. ``discover_gpus`` is the one call into NVML, made once, the
first time a GPU app is registered, so that a server that serves only CPU apps never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from yurt.errors import SchedulingError
from yurt.gpus import (
    GpuInfo,
    GpuListing,
    list_gpus,
    load_nvml,
    mismatch_message,
    pick_gpus,
    visible_gpus,
)
from yurt.machines import CATALOG, MachineType


class GpuAllocator:
    """Hands each runner GPUs of its app's machine type that no other live runner holds."""

    def __init__(
        self,
        gpus: Sequence[GpuInfo],
        why_none: str | None = None,
        catalog: Mapping[str, MachineType] = CATALOG,
    ) -> None:
        self.gpus = list(gpus)
        self.why_none = why_none
        self.catalog = catalog
        self._held: dict[str, list[GpuInfo]] = {}

    @classmethod
    def from_listing(
        cls,
        listing: GpuListing,
        allowed: str | None = None,
        catalog: Mapping[str, MachineType] = CATALOG,
    ) -> GpuAllocator:
        """The GPUs of an NVML listing, restricted to ``allowed`` (CUDA_VISIBLE_DEVICES syntax)."""
        gpus = visible_gpus(listing.gpus, allowed)
        why = listing.error
        if listing.gpus and not gpus:
            why = f"none of the {len(listing.gpus)} GPUs NVML sees is among {allowed!r}"
        return cls(gpus, why, catalog)

    def check(self, app_id: str, machine_types: Sequence[str], num_gpus: int) -> None:
        """Raise ``SchedulingError`` unless this machine has enough GPUs for one runner."""
        if pick_gpus(self.gpus, machine_types, num_gpus, self.catalog) is not None:
            return
        found = mismatch_message(machine_types, num_gpus, self.gpus, self.why_none)
        raise SchedulingError(
            f"app {app_id}: machine_type {list(machine_types)} cannot run on this machine: "
            f"{found}; serve it on a machine that has such GPUs, or deploy it to a Nomad cluster "
            "with them"
        )

    def acquire(
        self, holder: str, machine_types: Sequence[str], num_gpus: int
    ) -> list[GpuInfo] | None:
        """GPUs for ``holder``, now its own; None while too few of them are free."""
        if holder in self._held:
            raise ValueError(f"{holder} already holds GPUs {self.uuids(holder)}")
        taken = {g.uuid for held in self._held.values() for g in held}
        free = [g for g in self.gpus if g.uuid not in taken]
        picked = pick_gpus(free, machine_types, num_gpus, self.catalog)
        if picked is not None:
            self._held[holder] = picked
        return picked

    def room(self, machine_types: Sequence[str], num_gpus: int) -> int:
        """How many more runners asking this could ``acquire`` GPUs now, one after another."""
        if num_gpus <= 0:
            raise ValueError("room() counts runners that ask for GPUs")
        free, count = self.free, 0
        while (picked := pick_gpus(free, machine_types, num_gpus, self.catalog)) is not None:
            taken = {g.uuid for g in picked}
            free, count = [g for g in free if g.uuid not in taken], count + 1
        return count

    def release(self, holder: str) -> list[GpuInfo]:
        """Give back what ``holder`` held (nothing if it held none)."""
        return self._held.pop(holder, [])

    def uuids(self, holder: str) -> list[str]:
        """The UUIDs ``holder`` holds."""
        return [g.uuid for g in self._held.get(holder, [])]

    @property
    def free(self) -> list[GpuInfo]:
        """GPUs no runner holds."""
        taken = {g.uuid for held in self._held.values() for g in held}
        return [g for g in self.gpus if g.uuid not in taken]


def discover_gpus(
    allowed: str | None = None, catalog: Mapping[str, MachineType] = CATALOG
) -> GpuAllocator:
    """An allocator over the GPUs NVML sees (none when NVML or the driver is missing). Blocks."""
    return GpuAllocator.from_listing(list_gpus(load_nvml()), allowed, catalog)
