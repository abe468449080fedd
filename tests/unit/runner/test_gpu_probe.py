"""The runner's GPU probe against a fake NVML: listing, visibility, and matching an app."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from yurt import gpus as shared_gpus
from yurt.errors import SchedulingError
from yurt.runner import gpus as gpu_mod
from yurt.runner.gpus import (
    GpuInfo,
    list_gpus,
    load_nvml,
    map_visible_devices,
    pick_gpus,
    probe,
    visible_gpus,
)

MIB = 1024 * 1024
A100 = ("NVIDIA A100-SXM4-80GB", 81920)
H100 = ("NVIDIA H100 80GB HBM3", 81559)
H200 = ("NVIDIA H200", 143771)


class FakeNvmlError(Exception):
    """Stands for pynvml.NVMLError."""


class FakeNvml:
    """The slice of pynvml the probe uses, over made-up GPUs (UUIDs GPU-fake-<index>)."""

    NVMLError = FakeNvmlError

    def __init__(
        self,
        devices: list[tuple[str, int]],
        *,
        init_error: str | None = None,
        names_as_bytes: bool = False,
        utilization: bool = True,
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.names_as_bytes = names_as_bytes
        self.utilization = utilization
        self.used_mib = 0
        self.open = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNvmlError(self.init_error)
        self.open += 1

    def nvmlShutdown(self) -> None:
        self.open -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.devices):
            raise FakeNvmlError("Invalid Argument")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        name = self.devices[handle][0]
        return name.encode() if self.names_as_bytes else name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-fake-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        total = self.devices[handle][1] * MIB
        return SimpleNamespace(total=total, used=self.used_mib * MIB, free=total)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        if not self.utilization:
            raise FakeNvmlError("Not Supported")
        return SimpleNamespace(gpu=37, memory=5)


def gpu(index: int, model: tuple[str, int]) -> GpuInfo:
    return GpuInfo(index, model[0], f"GPU-fake-{index}", model[1])


# -- listing ------------------------------------------------------------------------------------


def test_list_reads_every_gpu_and_shuts_nvml_down() -> None:
    """Index, name, UUID, memory in MiB and utilization of each GPU; NVML closed afterwards."""
    nvml = FakeNvml([A100, H100])
    nvml.used_mib = 512
    listing = list_gpus(nvml)
    assert listing.error is None
    assert listing.gpus == [
        GpuInfo(0, "NVIDIA A100-SXM4-80GB", "GPU-fake-0", 81920, 512, 37),
        GpuInfo(1, "NVIDIA H100 80GB HBM3", "GPU-fake-1", 81559, 512, 37),
    ]
    assert nvml.open == 0


def test_list_decodes_bytes_and_tolerates_missing_utilization() -> None:
    """Old nvidia-ml-py returns bytes; a GPU without utilization counters reports None."""
    listing = list_gpus(FakeNvml([H100], names_as_bytes=True, utilization=False))
    assert listing.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert listing.gpus[0].utilization_pct is None


def test_list_without_nvml_module_is_empty_with_a_reason() -> None:
    """No nvidia-ml-py: no GPUs, and the reason says so."""
    listing = list_gpus(None)
    assert listing.gpus == [] and "not installed" in (listing.error or "")


def test_list_without_driver_is_empty_with_a_reason() -> None:
    """nvmlInit failing (no driver) is an empty listing, not an exception."""
    listing = list_gpus(FakeNvml([], init_error="NVML Shared Library Not Found"))
    assert listing.gpus == []
    assert "NVML Shared Library Not Found" in (listing.error or "")


def test_list_with_no_gpus_says_so() -> None:
    """A driver that sees no GPU is an empty listing with a reason."""
    assert list_gpus(FakeNvml([])).error == "NVML sees no GPU"


def test_load_nvml_is_none_when_not_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_nvml imports pynvml lazily and returns None where it is missing."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert load_nvml() is None


def test_load_nvml_returns_the_installed_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever sys.modules holds as pynvml is what the probe talks to."""
    fake = FakeNvml([H100])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert load_nvml() is fake


# -- NVIDIA_VISIBLE_DEVICES -> CUDA_VISIBLE_DEVICES ---------------------------------------------


def test_nvidia_uuids_become_cuda_visible_devices() -> None:
    """Nomad's UUID list is copied for CUDA when CUDA_VISIBLE_DEVICES is unset."""
    env = {"NVIDIA_VISIBLE_DEVICES": "GPU-aaa, GPU-bbb"}
    assert map_visible_devices(env) == "GPU-aaa,GPU-bbb"
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-aaa,GPU-bbb"


def test_cuda_visible_devices_already_set_wins() -> None:
    """An explicit CUDA_VISIBLE_DEVICES is left alone."""
    env = {"NVIDIA_VISIBLE_DEVICES": "GPU-aaa", "CUDA_VISIBLE_DEVICES": "1"}
    assert map_visible_devices(env) is None
    assert env["CUDA_VISIBLE_DEVICES"] == "1"


@pytest.mark.parametrize("value", ["all", "ALL"])
def test_all_leaves_every_gpu_visible(value: str) -> None:
    """'all' is not a device list: CUDA_VISIBLE_DEVICES stays unset."""
    env = {"NVIDIA_VISIBLE_DEVICES": value}
    assert map_visible_devices(env) is None
    assert "CUDA_VISIBLE_DEVICES" not in env


@pytest.mark.parametrize("value", ["none", "void", "", " "])
def test_none_and_void_hide_every_gpu(value: str) -> None:
    """'none', 'void' and empty mean no GPU, as for the container runtime."""
    env = {"NVIDIA_VISIBLE_DEVICES": value}
    assert map_visible_devices(env) == ""
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_nothing_to_map() -> None:
    """Without NVIDIA_VISIBLE_DEVICES nothing changes."""
    env: dict[str, str] = {}
    assert map_visible_devices(env) is None and env == {}


# -- which GPUs CUDA sees -----------------------------------------------------------------------

HOST = [gpu(0, A100), gpu(1, H100), gpu(2, H100)]


@pytest.mark.parametrize(
    ("cuda_visible", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("2,0", [2, 0]),
        ("GPU-fake-1", [1]),
        ("GPU-fake-2,1", [2, 1]),
        ("1,7,2", [1]),  # CUDA stops at the first entry that names no GPU
        ("-1", []),
        ("1,1", [1]),
        ("GPU-fake", []),  # a prefix of several UUIDs names none
    ],
)
def test_visible_gpus(cuda_visible: str | None, expected: list[int]) -> None:
    """CUDA_VISIBLE_DEVICES filters and orders NVML's list by index or (prefix of) UUID."""
    assert [g.index for g in visible_gpus(HOST, cuda_visible)] == expected


# -- matching an app ----------------------------------------------------------------------------


def test_pick_takes_one_model_in_the_apps_order() -> None:
    """Fallback types are tried in order; one runner's GPUs are all of one type."""
    host = [gpu(0, H100), gpu(1, H200), gpu(2, H200)]
    assert pick_gpus(host, ["GPU-H100", "GPU-H200"], 1) == [host[0]]
    assert pick_gpus(host, ["GPU-H100", "GPU-H200"], 2) == [host[1], host[2]]
    assert pick_gpus(host, ["GPU-H100", "GPU-H200"], 3) is None


def test_probe_accepts_matching_gpus() -> None:
    """One H100 visible, one GPU-H100 asked for: the monitor holds it."""
    monitor = probe(["GPU-H100"], 1, {}, FakeNvml([H100]))
    assert [g.name for g in monitor.gpus] == ["NVIDIA H100 80GB HBM3"]


def test_probe_refuses_another_model() -> None:
    """Asked for H100s, found an A100: the message names both."""
    with pytest.raises(SchedulingError) as err:
        probe(["GPU-H100"], 2, {}, FakeNvml([A100]))
    assert str(err.value) == "asked for 2 GPU-H100, found 1: NVIDIA A100-SXM4-80GB (81920 MiB)"


def test_probe_refuses_too_few() -> None:
    """Asked for 2 H100, one visible: refused, naming what was found."""
    with pytest.raises(SchedulingError, match=r"asked for 2 GPU-H100, found 1: NVIDIA H100"):
        probe(["GPU-H100"], 2, {}, FakeNvml([H100]))


def test_probe_h200_is_not_an_h100() -> None:
    """An H200 does not serve a GPU-H100 app."""
    with pytest.raises(SchedulingError, match=r"found 1: NVIDIA H200 \(143771 MiB\)"):
        probe(["GPU-H100"], 1, {}, FakeNvml([H200]))


def test_probe_does_not_mix_models() -> None:
    """An H100 and an H200 do not make two GPUs of ["GPU-H100", "GPU-H200"]."""
    with pytest.raises(SchedulingError, match="asked for 2 GPU-H100 or GPU-H200, found 2"):
        probe(["GPU-H100", "GPU-H200"], 2, {}, FakeNvml([H100, H200]))


def test_probe_groups_identical_gpus_in_the_message() -> None:
    """Several GPUs of one model are counted, not repeated."""
    with pytest.raises(SchedulingError, match=r"found 2: 2x NVIDIA A100-SXM4-80GB \(81920 MiB\)"):
        probe(["GPU-H100"], 1, {}, FakeNvml([A100, A100]))


@pytest.mark.parametrize(
    ("nvml", "reason"),
    [
        (None, "nvidia-ml-py is not installed"),
        (FakeNvml([], init_error="Driver Not Loaded"), "Driver Not Loaded"),
        (FakeNvml([]), "NVML sees no GPU"),
    ],
)
def test_probe_no_gpu_found(nvml: FakeNvml | None, reason: str) -> None:
    """No NVML, no driver or no GPU: 'no GPU found' and why."""
    with pytest.raises(SchedulingError) as err:
        probe(["GPU-H100"], 1, {}, nvml)
    assert str(err.value).startswith("asked for 1 GPU-H100, no GPU found (")
    assert reason in str(err.value)


def test_probe_sees_only_cuda_visible_devices() -> None:
    """NVML lists the host; the probe keeps what CUDA_VISIBLE_DEVICES lets the runner see."""
    monitor = probe(["GPU-H100"], 1, {"CUDA_VISIBLE_DEVICES": "GPU-fake-1"}, FakeNvml([A100, H100]))
    assert [g.uuid for g in monitor.gpus] == ["GPU-fake-1"]
    with pytest.raises(SchedulingError, match="found 1: NVIDIA A100"):
        probe(["GPU-H100"], 1, {"CUDA_VISIBLE_DEVICES": "0"}, FakeNvml([A100, H100]))


def test_probe_explains_gpus_hidden_by_cuda_visible_devices() -> None:
    """GPUs on the host but all hidden: the message names CUDA_VISIBLE_DEVICES."""
    with pytest.raises(SchedulingError, match=r"no GPU found .*CUDA_VISIBLE_DEVICES=''"):
        probe(["GPU-H100"], 1, {"CUDA_VISIBLE_DEVICES": ""}, FakeNvml([H100]))


def test_monitor_snapshot_reads_current_use() -> None:
    """/_yurt/info's figures are read again each time; NVML is closed after each read."""
    nvml = FakeNvml([A100, H100])
    monitor = probe(["GPU-H100"], 1, {"CUDA_VISIBLE_DEVICES": "1"}, nvml)
    nvml.used_mib = 2048
    (now,) = monitor.snapshot()
    assert (now.uuid, now.memory_used_mib, now.utilization_pct) == ("GPU-fake-1", 2048, 37)
    assert nvml.open == 0


def test_monitor_snapshot_keeps_last_figures_when_nvml_fails() -> None:
    """If NVML stops answering, the last figures stand."""
    nvml = FakeNvml([H100])
    monitor = probe(["GPU-H100"], 1, {}, nvml)
    nvml.init_error = "GPU is lost"
    assert monitor.snapshot() == monitor.gpus


def test_probe_module_has_no_nvml_import_at_top() -> None:
    """pynvml is imported only by load_nvml, so a CPU app never loads it."""
    assert "pynvml" not in vars(gpu_mod) and "pynvml" not in vars(shared_gpus)
