"""The reconcile loop: read each app's load, ask the policy, tell the backend."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from yurt.backends.base import Backend, RunnerState
from yurt.config import SchedulerConfig
from yurt.scheduler.policy import AppLoad, Decision, decide
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.scheduler")
_LIVE = frozenset({RunnerState.PENDING, RunnerState.SETUP, RunnerState.IDLE, RunnerState.RUNNING})


class LoadSource(Protocol):
    """Where the scheduler reads load and retires runners from routing (the router)."""

    def load(self, app_id: str) -> AppLoad:
        """The app's load now."""

    def retire(self, app_id: str, runner_id: str) -> None:
        """Send no new request to this runner."""

    def reinstate(self, app_id: str, runner_id: str) -> None:
        """Route to a retired runner again (it was not stopped after all)."""


class Poke(Protocol):
    """What the router asks of the scheduler: a pass now (a ``Wakeup`` or the ``Scheduler``)."""

    def poke(self, app_id: str | None = None) -> None:
        """Reconcile now."""


class Wakeup:
    """Asks the scheduler for a pass now instead of at its next interval (a request waits).

    Made before the router and the scheduler, and given to both: the router pokes it, the
    scheduler waits on it, and neither needs the other to exist first.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def poke(self, app_id: str | None = None) -> None:
        """Reconcile now."""
        self.event.set()


class Scheduler:
    """Keeps each app's runner count where the policy says."""

    def __init__(
        self,
        backend: Backend,
        config: SchedulerConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        source: LoadSource | None = None,
        wake: Wakeup | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock
        # Where load comes from (the router); a scheduler without one cannot start.
        self.source = source
        self.wake = wake or Wakeup()
        self._apps: dict[str, AppSpec] = {}
        self._task: asyncio.Task[None] | None = None

    def add_app(self, app_id: str, spec: AppSpec) -> None:
        """Start managing an app (the backend must already know it)."""
        self._apps[app_id] = spec
        self.poke()

    def remove_app(self, app_id: str) -> AppSpec | None:
        """Stop managing an app (it is being undeployed); returns its spec, if managed."""
        return self._apps.pop(app_id, None)

    def poke(self, app_id: str | None = None) -> None:
        """Reconcile now instead of at the next interval (a request is waiting)."""
        self.wake.poke(app_id)

    async def start(self) -> None:
        """Run the loop in the background."""
        assert self.source is not None, "a Scheduler needs its source (the router) to start"
        self._task = asyncio.create_task(self._loop())

    async def stop(self, grace: float | None = None) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            # Cleared before the pass, so a poke that arrives during it is not lost.
            self.wake.event.clear()
            next_at = self.clock() + self.config.interval
            for app_id, spec in list(self._apps.items()):
                if app_id not in self._apps:
                    continue  # removed during this pass
                try:
                    recheck = await self.reconcile(app_id, spec)
                except Exception:
                    log.exception("reconcile_failed", app=app_id)
                    continue
                if recheck is not None:
                    next_at = min(next_at, recheck)
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands in the
            # turn the event is set (CPython gh-86296), and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - self.clock())):
                    await self.wake.event.wait()

    async def reconcile(self, app_id: str, spec: AppSpec) -> float | None:
        """One pass for one app; returns when it wants to look again, if sooner."""
        assert self.source is not None, "a Scheduler needs its source (the router)"
        target = self.backend.target(app_id)
        load = self.source.load(app_id)
        decision = decide(spec, load, target, self.clock())
        if decision.target >= target:
            if decision.target != target:
                await self.backend.set_target(app_id, decision.target)
            return decision.recheck_at
        await self._lower(app_id, spec, load, target, decision)
        return decision.recheck_at

    async def _lower(
        self, app_id: str, spec: AppSpec, load: AppLoad, target: int, decision: Decision
    ) -> None:
        """Go down to ``decision.target`` by stopping runners nobody needs, never busy ones.

        First whatever the target counts but no runner stands for (not placed, or backing
        off): nothing stops. Then runners the policy found idle past keep_alive and runners
        not routable yet, as the backend picks among them (Nomad can only stop the highest
        allocation index; a busy one there holds the count where it is).
        """
        lower = target - decision.target
        views = self.backend.runners(app_id)
        live = [v for v in views if v.state in _LIVE]
        unplaced = min(lower, max(0, target - len(live)))
        routable = {r.runner_id for r in load.runners}
        starting = [v.runner_id for v in live if v.runner_id not in routable]
        candidates = [*decision.stop, *(r for r in starting if r not in decision.stop)]
        stops = self.backend.pick_stops(app_id, candidates)[: lower - unplaced]
        # Retire from routing before any await, so no request lands on a runner being stopped
        # (the load read above is only true until the first await).
        assert self.source is not None
        for runner_id in stops:
            self.source.retire(app_id, runner_id)
        if unplaced:
            try:
                await self.backend.set_target(app_id, target - unplaced)
            except Exception:
                for kept in stops:  # nothing was stopped: they serve on
                    self.source.reinstate(app_id, kept)
                raise
        for n, runner_id in enumerate(stops):
            reason = "keep_alive" if runner_id in decision.stop else "not_needed"
            log.info(
                "runner_idle_stop",
                app=app_id,
                runner=runner_id,
                reason=reason,
                keep_alive=spec.keep_alive,
            )
            try:
                await self.backend.stop_runner(app_id, runner_id, reason=reason, replace=False)
            except Exception:
                # Not stopped after all (the cluster refused): it and those after it serve on.
                for kept in stops[n:]:
                    self.source.reinstate(app_id, kept)
                raise
