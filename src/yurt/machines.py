"""The machine catalog: the one place that knows what each ``machine_type`` means.

The Nomad job builder, the runner's GPU probe and the local backend's GPU allocator all read it,
so that "GPU-H100" picks the same GPUs wherever a runner is placed.

A GPU belongs to a machine type when its NVML name (Nomad's ``${device.model}``) matches the
type's ``gpu_model_pattern`` and it has at least ``gpu_memory_mib`` of memory. The names NVML
reports (nomad-device-nvidia's ``${device.model}``)::

    NVIDIA A100-SXM4-80GB    NVIDIA A100 80GB PCIe
    NVIDIA H100 80GB HBM3    NVIDIA H100 PCIe         NVIDIA H100 NVL
    NVIDIA H200              NVIDIA H200 NVL          NVIDIA B200
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MIB_PER_GIB = 1024


class MachineType(BaseModel):
    """One machine type: its GPU (if any) and the default resources of a runner on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gpu: bool
    # A regular expression searched for in the NVML device name (Nomad's ``${device.model}``).
    # It must mean the same to Python's ``re`` and Go's RE2 (Nomad's ``regexp`` operand): plain
    # text and ``\b`` only. ``\b`` keeps "H100" from matching a GH100-style name.
    gpu_model_pattern: str | None = None
    gpu_memory_mib: int | None = Field(
        default=None, ge=1, description="least memory per GPU, in MiB, as NVML reports it"
    )
    cpu_mhz: int = 1000
    memory_mb: int = 2048

    def matches_gpu(self, name: str, memory_mib: int) -> bool:
        """Whether a GPU of this NVML name and memory (MiB) is one of this type's."""
        if not self.gpu or self.gpu_model_pattern is None:
            return False
        if re.search(self.gpu_model_pattern, name) is None:
            return False
        return self.gpu_memory_mib is None or memory_mib >= self.gpu_memory_mib


def _gib(n: int) -> int:
    return n * MIB_PER_GIB


# Memory classes sit a little under each card's nominal size, because NVML reports less than
# the marketing figure: an H100 80GB has 81559 MiB, which is under 80 GiB (81920 MiB); an H200
# 143771 MiB (140.4 GiB); a B200 183359 MiB (179.06 GiB). The A100 class takes the 40 GB cards
# (40960 MiB) as well as the 80 GB ones.
CATALOG: dict[str, MachineType] = {
    m.name: m
    for m in (
        MachineType(name="CPU", gpu=False, cpu_mhz=1000, memory_mb=2048),
        MachineType(
            name="GPU-A100",
            gpu=True,
            gpu_model_pattern=r"\bA100\b",
            gpu_memory_mib=_gib(39),
            memory_mb=32768,
        ),
        MachineType(
            name="GPU-H100",
            gpu=True,
            gpu_model_pattern=r"\bH100\b",
            gpu_memory_mib=_gib(79),
            memory_mb=65536,
        ),
        MachineType(
            name="GPU-H200",
            gpu=True,
            gpu_model_pattern=r"\bH200\b",
            gpu_memory_mib=_gib(139),
            memory_mb=65536,
        ),
        MachineType(
            name="GPU-B200",
            gpu=True,
            gpu_model_pattern=r"\bB200\b",
            gpu_memory_mib=_gib(178),
            memory_mb=65536,
        ),
    )
}


def known_machine_types() -> list[str]:
    """Names a user may put in ``machine_type``, sorted."""
    return sorted(CATALOG)


def machine_types_of_gpu(
    name: str, memory_mib: int, catalog: Mapping[str, MachineType] = CATALOG
) -> list[str]:
    """The GPU machine types a GPU of this NVML name and memory belongs to, sorted."""
    return sorted(t for t, m in catalog.items() if m.matches_gpu(name, memory_mib))


def with_overrides(
    overrides: Mapping[str, Mapping[str, Any]], catalog: Mapping[str, MachineType] = CATALOG
) -> dict[str, MachineType]:
    """A catalog with some fields of some types replaced, or types added. Pure.

    ``{"GPU-H100": {"cpu_mhz": 8000}, "GPU-L40S": {"gpu": True, "gpu_model_pattern": "L40S"}}``
    """
    out = dict(catalog)
    for name, fields in overrides.items():
        base = out.get(name)
        data = {**(base.model_dump() if base is not None else {}), **fields, "name": name}
        out[name] = MachineType.model_validate(data)
    return out
