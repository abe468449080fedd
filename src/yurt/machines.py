"""The machine catalog: the one place that knows what each ``machine_type`` means.

The Nomad job builder, the runner's GPU probe and the local backend's GPU allocator all read it,
so that "GPU-H100" picks the same GPUs wherever a runner is placed.

A GPU belongs to a machine type when its NVML name (Nomad's ``${device.model}``) matches the
type's ``gpu_model_pattern`` and it has at least ``gpu_memory_mib`` of memory. The names NVML
reports (nomad-device-nvidia's ``${device.model}``)::

    NVIDIA A100-SXM4-80GB    NVIDIA A100 80GB PCIe
    NVIDIA H100 80GB HBM3    NVIDIA H100 PCIe         NVIDIA H100 NVL
    NVIDIA H200              NVIDIA H200 NVL          NVIDIA B200
    NVIDIA L40               NVIDIA L40S              NVIDIA RTX A6000
    NVIDIA GeForce RTX 4090  NVIDIA GeForce RTX 5090  Tesla T4

Every machine type fal documents is here under fal's name (its CPU sizes ``XS`` to ``XL``, sized
as fal sizes them, and its GPU types), so a fal App's ``machine_type`` means something here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIB_PER_GIB = 1024

# Nomad's constraint operators (``Constraint.Validate`` in nomad/structs/structs.go:10021 at
# hashicorp/nomad@aa026cc9; the named ones are the constants at structs.go:9979-9988).
Operator = Literal[
    "=",
    "==",
    "is",
    "!=",
    "not",
    "<",
    "<=",
    ">",
    ">=",
    "regexp",
    "version",
    "semver",
    "set_contains",
    "set_contains_all",
    "set_contains_any",
    "is_set",
    "is_not_set",
    "distinct_hosts",
    "distinct_property",
]
# Operators that take no value (is_set, is_not_set) or may go without one (structs.go:10021).
_NO_VALUE = frozenset(("is_set", "is_not_set"))
_OPTIONAL_VALUE = frozenset(("distinct_hosts", "distinct_property"))
# Machine-type fields that say where a runner goes, not what it is: only the Nomad job reads
# them (node pool and constraints), so they stay out of what runners are told.
PLACEMENT_FIELDS = ("node_pool", "constraints")


class Constraint(BaseModel):
    """A Nomad placement constraint: ``attribute operator value``, e.g.
    ``("${node.class}", "=", "gpu-large")`` (Nomad's ``LTarget``, ``Operand``, ``RTarget``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attribute: str = Field(default="", description="LTarget, e.g. ${attr.kernel.name}")
    operator: Operator
    value: str = Field(default="", description="RTarget")

    @model_validator(mode="after")
    def _complete(self) -> Constraint:
        # The rules Nomad's Constraint.Validate applies, so that a typo fails at start, not as
        # a refused job at the first deploy.
        if self.operator in _NO_VALUE and self.value:
            raise ValueError(f"operator {self.operator!r} takes no value, got {self.value!r}")
        if self.operator not in _NO_VALUE | _OPTIONAL_VALUE and not self.value:
            raise ValueError(f"operator {self.operator!r} needs a value")
        if self.operator != "distinct_hosts" and not self.attribute:
            raise ValueError(f"operator {self.operator!r} needs an attribute, e.g. ${{node.class}}")
        return self

    def nomad(self) -> dict[str, str]:
        """The constraint as Nomad's job JSON has it (``Operand`` is required in JSON)."""
        return {"LTarget": self.attribute, "Operand": self.operator, "RTarget": self.value}


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
    # Where runners of this type go on Nomad: a node pool (None: ``[nomad] node_pool``) and
    # constraints on the nodes, all of which must hold. Set in ``[machines]``.
    node_pool: str | None = None
    constraints: tuple[Constraint, ...] = ()

    def matches_gpu(self, name: str, memory_mib: int) -> bool:
        """Whether a GPU of this NVML name and memory (MiB) is one of this type's."""
        if not self.gpu or self.gpu_model_pattern is None:
            return False
        if re.search(self.gpu_model_pattern, name) is None:
            return False
        return self.gpu_memory_mib is None or memory_mib >= self.gpu_memory_mib


def _gib(n: int) -> int:
    return n * MIB_PER_GIB


def _cpu(name: str, cores: float, memory_mb: int) -> MachineType:
    # Nomad reserves CPU in MHz; a core counts as 1000 MHz, as the "CPU" type's one core does.
    return MachineType(name=name, gpu=False, cpu_mhz=int(cores * 1000), memory_mb=memory_mb)


def _gpu(name: str, pattern: str, memory_mb: int) -> MachineType:
    # The model name alone fixes these cards' memory, so no memory class is needed. Runner
    # memory as for the types above, not fal's whole-machine RAM: [machines] raises it.
    return MachineType(name=name, gpu=True, gpu_model_pattern=pattern, memory_mb=memory_mb)


# Memory classes sit a little under each card's nominal size, because NVML reports less than
# the marketing figure: an H100 80GB has 81559 MiB, which is under 80 GiB (81920 MiB); an H200
# 143771 MiB (140.4 GiB); a B200 183359 MiB (179.06 GiB). The A100 class takes the 40 GB cards
# (40960 MiB) as well as the 80 GB ones.
CATALOG: dict[str, MachineType] = {
    m.name: m
    for m in (
        MachineType(name="CPU", gpu=False, cpu_mhz=1000, memory_mb=2048),
        # fal's CPU sizes (docs.fal.ai, "Machine Types"): cores and RAM as fal gives them.
        _cpu("XS", 0.5, 512),
        _cpu("S", 1, 1024),
        _cpu("M", 2, 2048),
        _cpu("L", 4, 15 * 1024),
        _cpu("XL", 8, 30 * 1024),
        # fal's other GPU types. "GPU-L40" links to the L40S on fal's page: both cards qualify.
        _gpu("GPU-A6000", r"\bA6000\b", 16384),
        _gpu("GPU-L40", r"\bL40", 32768),
        _gpu("GPU-RTX4090", r"\b4090\b", 32768),
        _gpu("GPU-RTX5090", r"\b5090\b", 32768),
        _gpu("GPU-T4", r"\bT4\b", 16384),
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


# Names fal used to document for a type now spelled otherwise: "GPU" was an A100 (40GB).
ALIASES: dict[str, str] = {"GPU": "GPU-A100"}


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
