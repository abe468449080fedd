"""The machine catalog: the one place that knows what each ``machine_type`` means."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MachineType(BaseModel):
    """One machine type: its GPU (if any) and the default resources of a runner on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gpu: bool
    # Regular expression matched against the NVML device name (Nomad's ``${device.model}``).
    gpu_model_pattern: str | None = None
    cpu_mhz: int = 1000
    memory_mb: int = 2048


CATALOG: dict[str, MachineType] = {
    m.name: m
    for m in (
        MachineType(name="CPU", gpu=False, cpu_mhz=1000, memory_mb=2048),
        MachineType(name="GPU-A100", gpu=True, gpu_model_pattern="A100", memory_mb=32768),
        MachineType(name="GPU-H100", gpu=True, gpu_model_pattern="H100", memory_mb=65536),
        MachineType(name="GPU-H200", gpu=True, gpu_model_pattern="H200", memory_mb=65536),
        MachineType(name="GPU-B200", gpu=True, gpu_model_pattern="B200", memory_mb=65536),
    )
}


def known_machine_types() -> list[str]:
    """Names a user may put in ``machine_type``, sorted."""
    return sorted(CATALOG)
