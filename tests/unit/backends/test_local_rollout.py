"""The local backend's surge redeploy, step by step, with the runners' processes played by the
test: ready, exited, or not yet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import yurt
from yurt.backends.gpus import GpuAllocator
from yurt.backends.local import LIVE, LocalBackend, _App, _Runner
from yurt.config import LocalBackendConfig
from yurt.discovery.local import LocalRegistry
from yurt.runner.gpus import GpuInfo
from yurt.spec import build_spec

H100 = "NVIDIA H100 80GB HBM3"


class Gpu(yurt.App):
    machine_type = "GPU-H100"
    num_gpus = 1

    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


class Cpu(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


@pytest.fixture
async def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalBackend]:
    async def no_process(self: LocalBackend, app: _App, runner: _Runner) -> None:
        """The test says when a runner is ready or gone."""

    monkeypatch.setattr(LocalBackend, "_run", no_process)
    gpus = GpuAllocator([GpuInfo(0, H100, "GPU-0", 81559), GpuInfo(1, H100, "GPU-1", 81559)])
    yield LocalBackend(LocalBackendConfig(), LocalRegistry(), tmp_path / "logs", gpus=gpus)
    await asyncio.sleep(0)  # let the no-op runner tasks end (and their sockets close)


def live(b: LocalBackend, app_id: str) -> list[_Runner]:
    return [r for r in b._apps[app_id].runners.values() if r.state in LIVE]


def ready(b: LocalBackend, app_id: str) -> list[_Runner]:
    return [r for r in live(b, app_id) if r.ready]


async def serving(b: LocalBackend, cls: type[yurt.App], app_id: str, tmp_path: Path) -> _App:
    """``app_id`` with two ready runners."""
    await b.ensure_app(app_id, build_spec(cls), tmp_path / "rev1")
    await b.set_target(app_id, 2)
    app = b._apps[app_id]
    for r in live(b, app_id):
        b._became_ready(app, r)
    assert len(ready(b, app_id)) == 2
    return app


async def test_with_no_spare_gpu_old_runners_go_one_per_ready_new_one(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """Two H100s, two runners: a redeploy never leaves the app without a ready runner."""
    app = await serving(backend, Gpu, "o/g", tmp_path)
    old = {r.runner_id for r in live(backend, "o/g")}
    await backend.ensure_app("o/g", build_spec(Gpu), tmp_path / "rev2")
    await backend.roll("o/g")
    [giving] = [r for r in app.runners.values() if r.runner_id in old and r.state not in LIVE]
    backend._exited(app, giving, 0)  # its GPU is free: a new runner starts on it
    [new] = [r for r in live(backend, "o/g") if not r.outdated]
    assert not new.ready
    # While it loads, the other old runner serves on.
    assert [r.runner_id for r in ready(backend, "o/g")] == list(old - {giving.runner_id})
    backend._became_ready(app, new)
    # Now the second old runner makes room, and the new one serves meanwhile.
    assert [r.runner_id for r in ready(backend, "o/g")] == [new.runner_id]
    [second] = [r for r in app.runners.values() if r.runner_id in old and r.state not in LIVE]
    backend._exited(app, second, 0)
    assert len([r for r in live(backend, "o/g") if not r.outdated]) == 2


async def test_a_second_redeploy_drops_runners_that_were_not_ready_first(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """Redeployed again before the last revision was ready: as each newest runner is ready,
    the old runners serving nobody go first, so as many runners as before stay ready."""
    app = await serving(backend, Cpu, "o/c", tmp_path)
    await backend.roll("o/c")  # revision 2 starts
    await backend.roll("o/c")  # revision 3 starts before revision 2 is ready
    newest = [r for r in live(backend, "o/c") if not r.outdated]
    assert len(newest) == 2
    backend._became_ready(app, newest[0])
    assert len(ready(backend, "o/c")) == 2
    assert all(r.ready for r in live(backend, "o/c") if r.outdated)


async def test_an_old_runner_that_never_started_puts_nothing_in_backoff(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """A superseded runner failing to start says nothing about the current revision."""
    await backend.ensure_app("o/c", build_spec(Cpu), tmp_path / "rev1")
    await backend.set_target("o/c", 1)
    app = backend._apps["o/c"]
    backend._became_ready(app, live(backend, "o/c")[0])
    await backend.roll("o/c")  # revision 2 starts one runner...
    await backend.set_target("o/c", 2)  # ...and a second one
    await backend.roll("o/c")  # revision 3, before revision 2 was ready
    still = [r for r in live(backend, "o/c") if r.outdated and not r.ready]
    assert len(still) == 1  # one of revision 2's runners, not told to stop yet
    failures: list[object] = []
    backend.add_failure_listener(failures.append)
    backend._exited(app, still[0], 4)
    assert failures == [] and app.backoff_until == 0.0
