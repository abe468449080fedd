"""GPUs as NVML (nvidia-ml-py, imported as ``pynvml``) reports them, and matching them to an app.

Shared by the control plane (the local backend hands runners GPUs, ``yurt doctor`` lists them)
and the runner (which checks its own before setup): neither side's code, so it lives here.

NVML is an injected dependency: each function that talks to it takes the module (or a fake with
the same functions), and ``load_nvml()`` imports the real one lazily, so that a CPU app and a
machine without the NVIDIA driver never need it. NVML ignores ``CUDA_VISIBLE_DEVICES`` and lists
every GPU of the host, so the GPUs a process may use are NVML's list filtered by that variable
(``visible_gpus``).
"""

from __future__ import annotations

import contextlib
import importlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from yurt.machines import CATALOG, MachineType

NVML_MODULE = "pynvml"
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as NVML reports it (index in NVML's order, which is PCI bus order)."""

    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int = 0
    utilization_pct: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``/_yurt/info`` and logs."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GpuListing:
    """What NVML saw: the GPUs, or why there are none (``error``)."""

    gpus: list[GpuInfo]
    error: str | None = None


def load_nvml() -> Any | None:
    """The ``pynvml`` module, or None when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module(NVML_MODULE)
    except ImportError:
        return None


def nvml_error(nvml: Any) -> type[BaseException]:
    """The library's error class (``OSError`` for a fake without one)."""
    error = getattr(nvml, "NVMLError", None)
    return error if isinstance(error, type) and issubclass(error, BaseException) else OSError


def _text(value: str | bytes) -> str:
    # nvidia-ml-py before 11.515 returned bytes.
    return value.decode() if isinstance(value, bytes) else value


def read_gpu(nvml: Any, index: int, handle: Any) -> GpuInfo:
    """One GPU's name, memory and use, read through its NVML handle."""
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml_error(nvml):  # not supported on some GPUs (MIG, vGPU)
        utilization = None
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_total_mib=int(memory.total) // _MIB,
        memory_used_mib=int(memory.used) // _MIB,
        utilization_pct=utilization,
    )


def list_gpus(nvml: Any | None) -> GpuListing:
    """Every GPU NVML sees on this host; a missing library or driver is an empty listing."""
    if nvml is None:
        return GpuListing([], "nvidia-ml-py is not installed")
    error = nvml_error(nvml)
    try:
        nvml.nvmlInit()
    except error as exc:
        return GpuListing([], f"NVML did not start: {exc} (is the NVIDIA driver installed?)")
    try:
        count = int(nvml.nvmlDeviceGetCount())
        gpus = [read_gpu(nvml, i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    except error as exc:
        return GpuListing([], f"NVML failed to list GPUs: {exc}")
    finally:
        with contextlib.suppress(error):
            nvml.nvmlShutdown()
    return GpuListing(gpus, None if gpus else "NVML sees no GPU")


# -- which GPUs are visible ---------------------------------------------------------------------


def entries(value: str) -> list[str]:
    """The non-empty items of a comma-separated device list."""
    return [e.strip() for e in value.split(",") if e.strip()]


def visible_gpus(gpus: Sequence[GpuInfo], cuda_visible: str | None) -> list[GpuInfo]:
    """The GPUs a CUDA program sees, in CUDA's order, given ``CUDA_VISIBLE_DEVICES``.

    Entries are NVML indexes or UUIDs (or unique UUID prefixes, as CUDA allows). As CUDA does,
    the list ends at the first entry that names no GPU. Indexes are NVML's (PCI bus order);
    CUDA numbers the same way only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which is why yurt
    itself hands out UUIDs.
    """
    if cuda_visible is None:
        return list(gpus)
    seen: list[GpuInfo] = []
    for entry in entries(cuda_visible):
        gpu = _find(gpus, entry)
        if gpu is None:
            break
        if gpu not in seen:
            seen.append(gpu)
    return seen


def _find(gpus: Sequence[GpuInfo], entry: str) -> GpuInfo | None:
    if entry.isdigit():
        return next((g for g in gpus if g.index == int(entry)), None)
    found = [g for g in gpus if g.uuid.startswith(entry)]
    return found[0] if len(found) == 1 else None


# -- matching GPUs against an app ---------------------------------------------------------------


def pick_gpus(
    gpus: Sequence[GpuInfo],
    machine_types: Sequence[str],
    num_gpus: int,
    catalog: Mapping[str, MachineType] = CATALOG,
) -> list[GpuInfo] | None:
    """``num_gpus`` GPUs of the first machine type (in the app's order) that has enough.

    All GPUs of one runner are of one machine type, as on Nomad, where one device request is
    met from one node and one model.
    """
    for name in machine_types:
        machine = catalog[name]
        matching = [g for g in gpus if machine.matches_gpu(g.name, g.memory_total_mib)]
        if len(matching) >= num_gpus:
            return matching[:num_gpus]
    return None


def describe_request(machine_types: Sequence[str], num_gpus: int) -> str:
    """``"2 GPU-H100"``, ``"1 GPU-H100 or GPU-H200"``."""
    return f"{num_gpus} {' or '.join(machine_types)}"


def describe_found(gpus: Sequence[GpuInfo]) -> str:
    """``"found 3: 2x NVIDIA A100-SXM4-80GB (81920 MiB), NVIDIA H100 PCIe (81559 MiB)"``."""
    counts = Counter(f"{g.name} ({g.memory_total_mib} MiB)" for g in gpus)
    parts = [f"{n}x {what}" if n > 1 else what for what, n in counts.items()]
    return f"found {len(gpus)}: {', '.join(parts)}"


def mismatch_message(
    machine_types: Sequence[str],
    num_gpus: int,
    gpus: Sequence[GpuInfo],
    why_none: str | None,
) -> str:
    """What was asked and what was found, for an error message."""
    asked = f"asked for {describe_request(machine_types, num_gpus)}"
    if not gpus:
        return f"{asked}, no GPU found ({why_none or 'none visible'})"
    return f"{asked}, {describe_found(gpus)}"
