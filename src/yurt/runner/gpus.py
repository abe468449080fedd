"""The GPUs a runner sees: its environment's device list, and the check before setup().

What NVML reports and how GPUs match an app is shared with the control plane (``yurt.gpus``).

Nomad's device plugin tells a task its GPUs only through ``NVIDIA_VISIBLE_DEVICES`` (NVML
UUIDs). CUDA ignores that variable (the container runtime reads it) and raw_exec isolates
nothing, so the runner copies it into ``CUDA_VISIBLE_DEVICES``, which CUDA reads and which
accepts UUIDs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from yurt.errors import SchedulingError
from yurt.gpus import (
    CUDA_VISIBLE,
    NVML_MODULE,
    GpuInfo,
    GpuListing,
    entries,
    list_gpus,
    load_nvml,
    mismatch_message,
    nvml_error,
    pick_gpus,
    read_gpu,
    visible_gpus,
)
from yurt.machines import CATALOG, MachineType

# Names a runner's callers found here before they moved to ``yurt.gpus``.
__all__ = [
    "CUDA_VISIBLE",
    "NVIDIA_VISIBLE",
    "NVML_MODULE",
    "GpuInfo",
    "GpuListing",
    "GpuMonitor",
    "list_gpus",
    "load_nvml",
    "map_visible_devices",
    "pick_gpus",
    "probe",
    "visible_gpus",
]

NVIDIA_VISIBLE = "NVIDIA_VISIBLE_DEVICES"
# The container runtime's words: "all" every GPU; "none" no GPU (driver still mounted); "void"
# (or empty) no GPU and no driver. None of them is a device list.
_NO_DEVICES = ("none", "void", "")


def map_visible_devices(environ: MutableMapping[str, str]) -> str | None:
    """Set ``CUDA_VISIBLE_DEVICES`` from ``NVIDIA_VISIBLE_DEVICES`` when only the latter is set.

    "all" leaves every GPU visible; "none", "void" or empty hide them all. Returns the value
    set, or None when nothing was changed.
    """
    if CUDA_VISIBLE in environ or NVIDIA_VISIBLE not in environ:
        return None
    value = environ[NVIDIA_VISIBLE].strip()
    if value.lower() == "all":
        return None
    mapped = "" if value.lower() in _NO_DEVICES else ",".join(entries(value))
    environ[CUDA_VISIBLE] = mapped
    return mapped


# -- the runner's probe -------------------------------------------------------------------------


class GpuMonitor:
    """The runner's GPUs: checked once before setup(), read again for ``/_yurt/info``."""

    def __init__(self, nvml: Any, gpus: Sequence[GpuInfo]) -> None:
        self._nvml = nvml
        self.gpus = list(gpus)

    def snapshot(self) -> list[GpuInfo]:
        """The same GPUs with their memory use and utilization now (the last ones on error)."""
        try:
            self._nvml.nvmlInit()
        except nvml_error(self._nvml):
            return self.gpus
        try:
            # NVML indexes are stable while the driver runs; its refcounted init is cheap.
            handles = [self._nvml.nvmlDeviceGetHandleByIndex(g.index) for g in self.gpus]
            self.gpus = [
                read_gpu(self._nvml, g.index, h) for g, h in zip(self.gpus, handles, strict=True)
            ]
        except nvml_error(self._nvml):
            pass
        finally:
            with contextlib.suppress(nvml_error(self._nvml)):
                self._nvml.nvmlShutdown()
        return self.gpus


def probe(
    machine_types: Sequence[str],
    num_gpus: int,
    environ: Mapping[str, str],
    nvml: Any | None,
    catalog: Mapping[str, MachineType] = CATALOG,
) -> GpuMonitor:
    """Check that the visible GPUs meet the app's machine types and num_gpus.

    Raises ``SchedulingError`` naming what was asked and what was found. ``environ`` should
    already have been through ``map_visible_devices``.
    """
    listing = list_gpus(nvml)
    cuda_visible = environ.get(CUDA_VISIBLE)
    seen = visible_gpus(listing.gpus, cuda_visible)
    why_none = listing.error
    if listing.gpus and not seen:
        why_none = f"{CUDA_VISIBLE}={cuda_visible!r} hides all {len(listing.gpus)} of this host"
    if pick_gpus(seen, machine_types, num_gpus, catalog) is None:
        raise SchedulingError(mismatch_message(machine_types, num_gpus, seen, why_none))
    return GpuMonitor(nvml, seen)
