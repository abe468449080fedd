"""The reconcile loop going down: nothing busy is stopped, and unplaced runners go first."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import BaseModel

import yurt
from yurt.backends.base import RunnerState, RunnerView
from yurt.config import SchedulerConfig
from yurt.errors import DeployError
from yurt.scheduler.loop import Scheduler
from yurt.scheduler.policy import AppLoad, RunnerLoad
from yurt.spec import build_spec


class Body(BaseModel):
    x: int = 0


class Idle(yurt.App, keep_alive=10, max_concurrency=4):
    @yurt.endpoint("/")
    def run(self, body: Body) -> Body:
        return body


SPEC = build_spec(Idle)
APP = "o/idle"


class HighestFirst:
    """A backend that, like Nomad, can only stop its highest-index runner when going down."""

    def __init__(self, runners: list[str], target: int) -> None:
        self.order = runners  # name index order: the last is the highest
        self._target = target
        self.calls: list[tuple[str, object]] = []
        self.refuse = False

    def target(self, app_id: str) -> int:
        return self._target

    async def set_target(self, app_id: str, count: int) -> None:
        self.calls.append(("set_target", count))
        self._target = count

    def runners(self, app_id: str) -> list[RunnerView]:
        return [RunnerView(r, app_id, RunnerState.IDLE, "h", 1, None, 0.0) for r in self.order]

    def pick_stops(self, app_id: str, idle: Sequence[str]) -> list[str]:
        picks = []
        for runner in reversed(self.order):
            if runner not in idle:
                break
            picks.append(runner)
        return picks

    async def stop_runner(self, app_id: str, runner_id: str, *, reason: str, replace: bool) -> None:
        if self.refuse:
            raise DeployError("the cluster refused")
        self.calls.append(("stop", runner_id))
        self.order.remove(runner_id)
        self._target -= 1

    def add_failure_listener(self, listener: object) -> None:
        pass


class Load:
    def __init__(self, load: AppLoad) -> None:
        self.now = load
        self.retired: list[str] = []

    def load(self, app_id: str) -> AppLoad:
        return self.now

    def retire(self, app_id: str, runner_id: str) -> None:
        self.retired.append(runner_id)

    def reinstate(self, app_id: str, runner_id: str) -> None:
        self.retired.remove(runner_id)


def scheduler(backend: HighestFirst, load: AppLoad, now: float) -> tuple[Scheduler, Load]:
    source = Load(load)
    s = Scheduler(backend, SchedulerConfig(), clock=lambda: now, source=source)  # type: ignore[arg-type]
    return s, source


async def test_a_busy_highest_runner_holds_the_count() -> None:
    """An idle low-index runner is not traded for a busy high-index one: nothing stops."""
    backend = HighestFirst(["r0", "r1"], target=2)
    load = AppLoad(runners=(RunnerLoad("r0", 0, 0.0), RunnerLoad("r1", 1, None)))
    s, source = scheduler(backend, load, now=100.0)
    await s.reconcile(APP, SPEC)
    assert backend.calls == [] and source.retired == []
    assert backend.target(APP) == 2


async def test_the_idle_highest_runner_is_retired_then_stopped() -> None:
    """When the highest-index runner is the idle one, it leaves routing, then stops."""
    backend = HighestFirst(["r0", "r1"], target=2)
    load = AppLoad(runners=(RunnerLoad("r0", 1, None), RunnerLoad("r1", 0, 0.0)))
    s, source = scheduler(backend, load, now=100.0)
    await s.reconcile(APP, SPEC)
    assert source.retired == ["r1"] and backend.calls == [("stop", "r1")]
    assert backend.target(APP) == 1


async def test_unplaced_runners_are_dropped_before_any_stop() -> None:
    """A count above the runners that exist is lowered first, so no live runner pays for it."""
    backend = HighestFirst(["r0"], target=3)
    load = AppLoad(runners=(RunnerLoad("r0", 1, None),))
    s, source = scheduler(backend, load, now=100.0)
    await s.reconcile(APP, SPEC)
    assert backend.calls == [("set_target", 1)] and source.retired == []


async def test_a_stop_the_cluster_refuses_puts_the_runner_back_in_routing() -> None:
    """Retired, then the stop fails: the runner is routed to again, and the error surfaces."""
    backend = HighestFirst(["r0", "r1"], target=2)
    backend.refuse = True
    load = AppLoad(runners=(RunnerLoad("r0", 1, None), RunnerLoad("r1", 0, 0.0)))
    s, source = scheduler(backend, load, now=100.0)
    with pytest.raises(DeployError):
        await s.reconcile(APP, SPEC)
    assert source.retired == [] and backend.target(APP) == 2


class RetiredFirst(HighestFirst):
    """Notes, at set_target, which runners were already out of routing."""

    def __init__(self, runners: list[str], target: int, source: list[Load]) -> None:
        super().__init__(runners, target)
        self.source = source
        self.retired_at_set_target: list[str] | None = None

    async def set_target(self, app_id: str, count: int) -> None:
        self.retired_at_set_target = list(self.source[0].retired)
        await super().set_target(app_id, count)


async def test_runners_to_stop_leave_routing_before_the_first_await() -> None:
    """Lowering an unplaced count awaits the backend: the idle runner chosen to stop is out of
    routing by then, so no request lands on it meanwhile."""
    sources: list[Load] = []
    # Target 3, two runners: one unplaced; r1 idle past keep_alive.
    backend = RetiredFirst(["r0", "r1"], target=3, source=sources)
    load = AppLoad(runners=(RunnerLoad("r0", 1, None), RunnerLoad("r1", 0, 0.0)))
    s, source = scheduler(backend, load, now=100.0)
    sources.append(source)
    await s.reconcile(APP, SPEC)
    assert backend.retired_at_set_target == ["r1"]
    assert ("stop", "r1") in backend.calls and backend.target(APP) == 1
