"""The GPUs a runner sees, through NVML (nvidia-ml-py, imported as ``pynvml``).

NVML is an injected dependency: each function that talks to it takes the module (or a fake with
the same functions), and ``load_nvml()`` imports the real one lazily, so that a CPU app and a
machine without the NVIDIA driver never need it.

Two facts shape this module:

- Nomad's device plugin tells a task its GPUs only through ``NVIDIA_VISIBLE_DEVICES`` (NVML
  UUIDs). CUDA ignores that variable (the container runtime reads it) and raw_exec isolates
  nothing, so the runner copies it into ``CUDA_VISIBLE_DEVICES``, which CUDA reads and which
  accepts UUIDs.
- NVML ignores ``CUDA_VISIBLE_DEVICES`` and lists every GPU of the host, so the GPUs a runner
  may use are NVML's list filtered by that variable.
"""

from __future__ import annotations

import contextlib
import importlib
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from yurt.errors import SchedulingError
from yurt.machines import CATALOG, MachineType

NVML_MODULE = "pynvml"
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
NVIDIA_VISIBLE = "NVIDIA_VISIBLE_DEVICES"
# The container runtime's words: "all" every GPU; "none" no GPU (driver still mounted); "void"
# (or empty) no GPU and no driver. None of them is a device list.
_NO_DEVICES = ("none", "void", "")
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


def _nvml_error(nvml: Any) -> type[BaseException]:
    error = getattr(nvml, "NVMLError", None)
    return error if isinstance(error, type) and issubclass(error, BaseException) else OSError


def _text(value: str | bytes) -> str:
    # nvidia-ml-py before 11.515 returned bytes.
    return value.decode() if isinstance(value, bytes) else value


def _read(nvml: Any, index: int, handle: Any) -> GpuInfo:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except _nvml_error(nvml):  # not supported on some GPUs (MIG, vGPU)
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
    error = _nvml_error(nvml)
    try:
        nvml.nvmlInit()
    except error as exc:
        return GpuListing([], f"NVML did not start: {exc} (is the NVIDIA driver installed?)")
    try:
        count = int(nvml.nvmlDeviceGetCount())
        gpus = [_read(nvml, i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    except error as exc:
        return GpuListing([], f"NVML failed to list GPUs: {exc}")
    finally:
        with contextlib.suppress(error):
            nvml.nvmlShutdown()
    return GpuListing(gpus, None if gpus else "NVML sees no GPU")


# -- which GPUs are visible ---------------------------------------------------------------------


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
    mapped = "" if value.lower() in _NO_DEVICES else ",".join(_entries(value))
    environ[CUDA_VISIBLE] = mapped
    return mapped


def _entries(value: str) -> list[str]:
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
    for entry in _entries(cuda_visible):
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
        except _nvml_error(self._nvml):
            return self.gpus
        try:
            # NVML indexes are stable while the driver runs; its refcounted init is cheap.
            handles = [self._nvml.nvmlDeviceGetHandleByIndex(g.index) for g in self.gpus]
            self.gpus = [
                _read(self._nvml, g.index, h) for g, h in zip(self.gpus, handles, strict=True)
            ]
        except _nvml_error(self._nvml):
            pass
        finally:
            with contextlib.suppress(_nvml_error(self._nvml)):
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
