"""The local backend's GPUs: each runner its own, released on exit, waiting rather than sharing."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import yurt
from yurt.backends.gpus import GpuAllocator
from yurt.backends.local import LocalBackend
from yurt.config import HealthConfig, LocalBackendConfig
from yurt.discovery.local import LocalRegistry
from yurt.errors import SchedulingError
from yurt.gpus import GpuInfo, GpuListing
from yurt.spec import AppSpec, build_spec

from support import wait_until

pytestmark = pytest.mark.timeout(120)

H100 = ("NVIDIA H100 80GB HBM3", 81559)
A100 = ("NVIDIA A100-SXM4-80GB", 81920)

MakeBackend = Callable[[GpuAllocator | None], Awaitable[LocalBackend]]


def gpu(index: int, model: tuple[str, int]) -> GpuInfo:
    return GpuInfo(index, model[0], f"GPU-{index:04d}", model[1])


class OneH100(yurt.App):
    machine_type = "GPU-H100"
    num_gpus = 1

    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


class TwoH100(OneH100):
    num_gpus = 2


class OtherH100(OneH100):
    app_name = "other-h100"


class Cpu(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


def spec(cls: type[yurt.App]) -> AppSpec:
    return build_spec(cls)


# -- the allocator alone ------------------------------------------------------------------------


def test_allocator_hands_out_each_gpu_once() -> None:
    """Two holders get different GPUs; a third waits (None) while both are held."""
    pool = GpuAllocator([gpu(0, H100), gpu(1, H100)])
    first = pool.acquire("r1", ["GPU-H100"], 1)
    second = pool.acquire("r2", ["GPU-H100"], 1)
    assert first is not None and second is not None
    assert {first[0].uuid, second[0].uuid} == {"GPU-0000", "GPU-0001"}
    assert pool.acquire("r3", ["GPU-H100"], 1) is None
    assert pool.free == []


def test_allocator_release_frees_for_the_next() -> None:
    """What a holder releases is handed to the next one."""
    pool = GpuAllocator([gpu(0, H100)])
    assert pool.acquire("r1", ["GPU-H100"], 1) is not None
    assert pool.acquire("r2", ["GPU-H100"], 1) is None
    assert [g.uuid for g in pool.release("r1")] == ["GPU-0000"]
    assert pool.release("r1") == []
    assert pool.uuids("r2") == []
    assert pool.acquire("r2", ["GPU-H100"], 1) is not None
    assert pool.uuids("r2") == ["GPU-0000"]


def test_allocator_takes_only_matching_models() -> None:
    """An A100 is never given to a GPU-H100 runner."""
    pool = GpuAllocator([gpu(0, A100), gpu(1, H100)])
    assert pool.uuids("r1") == []
    assert pool.acquire("r1", ["GPU-H100"], 1) == [gpu(1, H100)]
    assert pool.acquire("r2", ["GPU-H100"], 1) is None
    assert pool.acquire("r3", ["GPU-A100"], 1) == [gpu(0, A100)]


def test_allocator_refuses_a_second_grant_to_one_holder() -> None:
    """A holder that already holds GPUs is a bookkeeping error."""
    pool = GpuAllocator([gpu(0, H100), gpu(1, H100)])
    pool.acquire("r1", ["GPU-H100"], 1)
    with pytest.raises(ValueError, match="r1 already holds"):
        pool.acquire("r1", ["GPU-H100"], 1)


def test_check_no_gpu_found() -> None:
    """No GPU at all: the error names the app, the machine type and 'no GPU found'."""
    pool = GpuAllocator([], "NVML did not start: Driver Not Loaded")
    with pytest.raises(SchedulingError) as err:
        pool.check("default/one-h100", ["GPU-H100"], 1)
    message = str(err.value)
    assert "default/one-h100" in message and "GPU-H100" in message
    assert "no GPU found (NVML did not start: Driver Not Loaded)" in message


def test_check_too_few_in_total() -> None:
    """Fewer matching GPUs on the machine than num_gpus: refused, naming what was found."""
    pool = GpuAllocator([gpu(0, H100), gpu(1, A100)])
    pool.check("a", ["GPU-H100"], 1)
    with pytest.raises(SchedulingError, match="asked for 2 GPU-H100, found 2: "):
        pool.check("a", ["GPU-H100"], 2)


def test_from_listing_restricts_to_allowed() -> None:
    """An allow list in CUDA_VISIBLE_DEVICES syntax keeps the others out of the pool."""
    listing = GpuListing([gpu(0, H100), gpu(1, H100)])
    assert [g.index for g in GpuAllocator.from_listing(listing, "1").gpus] == [1]
    hidden = GpuAllocator.from_listing(listing, "")
    assert hidden.gpus == [] and "none of the 2 GPUs" in (hidden.why_none or "")


# -- the backend, with runners that are a shell script recording their GPUs ---------------------


@pytest.fixture
def seen(tmp_path: Path) -> Path:
    """The folder where each fake runner writes its CUDA_VISIBLE_DEVICES, named by runner id."""
    folder = tmp_path / "seen"
    folder.mkdir()
    return folder


def fake_python(tmp_path: Path, seen: Path) -> str:
    """A stand-in for the runner's interpreter: records its GPUs, then idles until signalled."""
    script = tmp_path / "fake-python"
    script.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --runner-id ] && id="$2"; shift; done\n'
        f'printf %s "${{CUDA_VISIBLE_DEVICES-unset}}" > "{seen}/$id.tmp"\n'
        f'mv "{seen}/$id.tmp" "{seen}/$id"\n'
        "exec sleep 120\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.fixture
async def backend_for(tmp_path: Path, seen: Path) -> AsyncIterator[MakeBackend]:
    """Make a LocalBackend over given GPUs; every one made is stopped at the end."""
    made: list[LocalBackend] = []

    async def make(gpus: GpuAllocator | None) -> LocalBackend:
        config = LocalBackendConfig(
            python=fake_python(tmp_path, seen),
            health=HealthConfig(startup_poll=0.2),
            kill_after=2.0,
        )
        backend = LocalBackend(config, LocalRegistry(), tmp_path / "logs", gpus=gpus)
        await backend.start()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.stop(grace=0)


def recorded(seen: Path) -> dict[str, str]:
    """runner id -> the CUDA_VISIBLE_DEVICES it started with."""
    return {p.name: p.read_text() for p in seen.iterdir() if not p.name.endswith(".tmp")}


def live(backend: LocalBackend, app_id: str) -> list[str]:
    return sorted(v.runner_id for v in backend.runners(app_id) if v.state != "CRASH_BACKOFF")


async def test_runners_get_distinct_gpus_and_the_rest_wait(
    backend_for: MakeBackend, seen: Path, tmp_path: Path
) -> None:
    """Target 3 on two H100s: two runners with one UUID each, the third waits unstarted."""
    backend = await backend_for(GpuAllocator([gpu(0, H100), gpu(1, H100)]))
    await backend.ensure_app("o/a", spec(OneH100), tmp_path / "payload")
    await backend.set_target("o/a", 3)
    await wait_until(lambda: len(recorded(seen)) == 2, what="two runners started")
    assert sorted(recorded(seen).values()) == ["GPU-0000", "GPU-0001"]
    assert len(live(backend, "o/a")) == 2


async def test_exit_releases_gpus_to_a_waiting_runner(
    backend_for: MakeBackend, seen: Path, tmp_path: Path
) -> None:
    """A stopped runner's GPU goes to the replacement only once its process has exited."""
    backend = await backend_for(GpuAllocator([gpu(0, H100)]))
    await backend.ensure_app("o/a", spec(OneH100), tmp_path / "payload")
    await backend.set_target("o/a", 1)
    await wait_until(lambda: len(recorded(seen)) == 1, what="first runner started")
    (first,) = live(backend, "o/a")
    await backend.stop_runner("o/a", first, reason="test", replace=True)
    await wait_until(lambda: len(recorded(seen)) == 2, what="replacement started")
    assert first not in live(backend, "o/a")
    assert set(recorded(seen).values()) == {"GPU-0000"}
    assert backend.gpus is not None and backend.gpus.free == []


async def test_multi_gpu_runner_gets_all_its_gpus(
    backend_for: MakeBackend, seen: Path, tmp_path: Path
) -> None:
    """num_gpus=2: one runner with both UUIDs in CUDA_VISIBLE_DEVICES."""
    backend = await backend_for(GpuAllocator([gpu(0, H100), gpu(1, H100), gpu(2, A100)]))
    await backend.ensure_app("o/two", spec(TwoH100), tmp_path / "payload")
    await backend.set_target("o/two", 2)
    await wait_until(lambda: len(recorded(seen)) == 1, what="one runner started")
    assert list(recorded(seen).values()) == ["GPU-0000,GPU-0001"]
    assert len(live(backend, "o/two")) == 1


async def test_another_apps_waiting_runner_starts_when_gpus_free(
    backend_for: MakeBackend, seen: Path, tmp_path: Path
) -> None:
    """App B waits while app A holds every GPU, and starts when A scales down."""
    backend = await backend_for(GpuAllocator([gpu(0, H100), gpu(1, H100)]))
    await backend.ensure_app("o/a", spec(OneH100), tmp_path / "payload")
    await backend.ensure_app("o/b", spec(OtherH100), tmp_path / "payload")
    await backend.set_target("o/a", 2)
    await wait_until(lambda: len(recorded(seen)) == 2, what="app A's runners started")
    await backend.set_target("o/b", 1)
    assert live(backend, "o/b") == []
    await backend.set_target("o/a", 1)
    await wait_until(lambda: live(backend, "o/b"), what="app B's runner started")
    await wait_until(lambda: len(recorded(seen)) == 3, what="app B's runner recorded")
    (b_runner,) = live(backend, "o/b")
    (a_runner,) = live(backend, "o/a")
    assert recorded(seen)[b_runner] != recorded(seen)[a_runner]


async def test_cpu_app_sees_no_gpu_and_never_asks_nvml(
    backend_for: MakeBackend, seen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU runner starts with CUDA_VISIBLE_DEVICES empty and NVML is never consulted."""

    def no_nvml() -> GpuAllocator:
        raise AssertionError("NVML consulted for a CPU app")

    monkeypatch.setattr("yurt.backends.local.discover_gpus", no_nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    backend = await backend_for(None)
    await backend.ensure_app("o/cpu", spec(Cpu), tmp_path / "payload")
    await backend.set_target("o/cpu", 1)
    await wait_until(lambda: len(recorded(seen)) == 1, what="CPU runner started")
    assert list(recorded(seen).values()) == [""]
    assert backend.gpus is None


async def test_gpu_app_without_gpus_fails_at_ensure_app(
    backend_for: MakeBackend, tmp_path: Path
) -> None:
    """ensure_app raises SchedulingError naming the machine type; the app is not registered."""
    backend = await backend_for(GpuAllocator([gpu(0, A100)]))
    with pytest.raises(SchedulingError, match=r"machine_type \['GPU-H100'\].*found 1: NVIDIA A100"):
        await backend.ensure_app("o/a", spec(OneH100), tmp_path / "payload")
    assert backend.runners("o/a") == []


async def test_gpus_are_discovered_once(
    backend_for: MakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVML is asked once, at the first GPU app, for the configured GPUs; later ones reuse it."""
    calls: list[str | None] = []

    def discover(allowed: str | None = None, catalog: object = None) -> GpuAllocator:
        calls.append(allowed)
        return GpuAllocator([gpu(0, H100)])

    monkeypatch.setattr("yurt.backends.local.discover_gpus", discover)
    backend = await backend_for(None)
    await backend.ensure_app("o/a", spec(OneH100), tmp_path / "payload")
    await backend.ensure_app("o/b", spec(OtherH100), tmp_path / "payload")
    assert calls == [backend.config.gpus]  # the GPUs the configuration allows
