"""Following each app's allocations and evaluations: two blocking query loops per app.

From the allocations come ``NomadBackend.runners()`` and the start failures; from the
evaluations, runners Nomad cannot place (``evals.py``). Healthy runners are found through Consul
(``ConsulDiscovery``), not here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from yurt.backends.base import FailureListener, StartFailure
from yurt.backends.nomad.allocs import (
    TERMINAL,
    alloc_address,
    deployment_healthy,
    exit_detail,
    health_killed,
    task_state,
)
from yurt.backends.nomad.evals import Unplaced, placed_since, unplaced
from yurt.backends.nomad.naming import GROUP, TASK, parse_failure
from yurt.backends.nomad.scaling import Scaling, _App
from yurt.backoff import capped_backoff
from yurt.errors import ClusterError

log = structlog.get_logger("yurt.nomad")

RETRY_FIRST_S, RETRY_MAX_S = 0.25, 10.0  # backoff of a failing blocking query


class HealthHistory(Protocol):
    """Whether a runner ever passed its health checks (``ConsulDiscovery`` is one)."""

    def was_healthy(self, app_id: str, runner_id: str) -> bool:
        """True once the runner has been healthy."""


class AllocationWatch(Scaling):
    """Follows each app's allocations and reports start failures (a part of ``NomadBackend``)."""

    history: HealthHistory | None
    _listeners: list[FailureListener]
    _chores: set[asyncio.Task[None]]

    async def _follow(self, app: _App) -> None:
        def observe(stubs: list[dict[str, Any]]) -> None:
            self._observe(app, [s for s in stubs if s.get("TaskGroup", GROUP) == GROUP])

        await self._blocking(app, "allocations", self.client.allocations, observe)

    async def _follow_evals(self, app: _App) -> None:
        await self._blocking(
            app, "evaluations", self.client.evaluations, lambda e: self._observe_evals(app, e)
        )

    async def _blocking(
        self,
        app: _App,
        what: str,
        read: Callable[..., Awaitable[tuple[int, list[dict[str, Any]]]]],
        observe: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        """Read ``what`` of the app's job with blocking queries for ever, observing each reply."""
        index, failures = 0, 0
        while True:
            try:
                new_index, found = await read(app.job_id, index=index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch must outlive any one bad reply
                failures += 1
                retry_s = capped_backoff(failures, first=RETRY_FIRST_S, cap=RETRY_MAX_S)
                log.warning(
                    "nomad_watch_failed",
                    app=app.app_id,
                    what=what,
                    error=str(exc) or repr(exc),
                    retry_s=retry_s,
                    exc_info=not isinstance(exc, ClusterError),
                )
                await asyncio.sleep(retry_s)
                continue
            failures = 0
            if new_index < index:
                # Nomad's index went backwards (a restored or new cluster): start again from 0.
                log.info("nomad_index_reset", app=app.app_id, what=what, old=index, new=new_index)
                index = 0
            elif new_index < 1:
                await asyncio.sleep(RETRY_FIRST_S)  # no index to block on: don't spin
            else:
                index = new_index
            observe(found)

    def _observe_evals(self, app: _App, evaluations: list[dict[str, Any]]) -> None:
        found = unplaced(evaluations, GROUP)
        before, app.unplaced = app.unplaced, found
        if found is None:
            if before is not None:
                log.info("nomad_placement_recovered", app=app.app_id)
            return
        if before is None or (before.reasons, before.final) != (found.reasons, found.final):
            log.warning(
                "nomad_placement_failed",
                app=app.app_id,
                runners=found.count,
                reasons=found.reasons,
                final=found.final,
                ask=app.ask,
                eval=found.eval_id,
            )
        self._tell_unplaced(app)

    def unplaced_final(self, app: _App) -> bool:
        """Nothing can place a runner of the app until the cluster changes: every node was
        filtered out, nothing was placed since, and no runner of it is left."""
        found = app.unplaced
        return found is not None and found.final and not placed_since(app.allocs.values(), found)

    def _tell_unplaced(self, app: _App) -> None:
        """Fail the callers waiting for the app once per final failure (when the evaluation
        says so, or when the app's last runner goes while it holds)."""
        found = app.unplaced
        if found is None or not self.unplaced_final(app) or app.told == found.eval_id:
            return
        app.told = found.eval_id
        self._tell(
            StartFailure(
                app.app_id,
                f"eval-{found.eval_id[:8]}",
                "placement_failed",
                placement_detail(app, found),
                final=True,
            )
        )

    def _observe(self, app: _App, stubs: list[dict[str, Any]]) -> None:
        app.allocs = {str(s["ID"]): s for s in stubs}
        app.stopping &= app.allocs.keys()
        app.replacing &= app.allocs.keys()
        app.lowering &= app.allocs.keys()
        self._release_spared(app)
        app.reported = {k for k in app.reported if k[0] in app.allocs}
        app.ports = {k: v for k, v in app.ports.items() if k in app.allocs}
        for rid, stub in app.allocs.items():
            live = stub.get("ClientStatus") not in TERMINAL
            if live and rid not in app.ports and not alloc_address(stub)[1]:
                # Stubs may come without AllocatedResources: read the ports once.
                app.ports[rid] = ("", 0)
                self._chore(self._read_ports(app, rid))
            if self._healthy(app, rid, stub):
                app.failures, app.last_failure = 0, ""
                continue
            restarts = int(task_state(stub).get("Restarts") or 0)
            # Ended on its own: not one we (or a lower Count) told to stop.
            ended = (
                stub.get("ClientStatus") in TERMINAL
                and stub.get("DesiredStatus") == "run"
                and rid not in app.stopping
            )
            keys = [(rid, n) for n in range(1, restarts + 1)]
            if ended:
                keys.append((rid, -1))
            for key in keys:
                if key in app.reported:
                    continue
                app.reported.add(key)
                if app.synced:  # failures from before we looked are history, not news
                    self._chore(self._start_failed(app, rid, stub))
        app.synced = True
        self._tell_unplaced(app)  # the last runner may have gone while nothing can be placed

    async def _sync(self, app: _App) -> None:
        """Read the allocations once if they are not followed yet (a job just adopted)."""
        if app.synced:
            return
        try:
            _, listed = await self.client.allocations(app.job_id)
        except ClusterError as exc:
            log.debug("nomad_allocs_unreadable", app=app.app_id, error=str(exc))
            return
        self._observe(app, [s for s in listed if s.get("TaskGroup", GROUP) == GROUP])

    async def _read_ports(self, app: _App, runner_id: str) -> None:
        try:
            address = alloc_address(await self.client.allocation(runner_id))
        except ClusterError as exc:
            log.debug("nomad_alloc_unreadable", app=app.app_id, runner=runner_id, error=str(exc))
            address = ("", 0)
        if address[1]:
            app.ports[runner_id] = address
        else:
            app.ports.pop(runner_id, None)  # try again on the next reply

    def _healthy(self, app: _App, runner_id: str, stub: dict[str, Any]) -> bool:
        if deployment_healthy(stub):
            return True
        return self.history is not None and self.history.was_healthy(app.app_id, runner_id)

    async def _start_failed(self, app: _App, runner_id: str, stub: dict[str, Any]) -> None:
        try:
            tail = await self.client.task_log_tail(runner_id, TASK, "stderr")
        except ClusterError as exc:
            log.debug("nomad_log_unreadable", app=app.app_id, runner=runner_id, error=str(exc))
            tail = ""
        found = parse_failure(tail)
        kind, message = found if found else ("exited", exit_detail(stub))
        if health_killed(stub) and kind not in ("payload", "setup"):
            kind = "startup_timeout"
            message = f"runner did not pass its health check within its grace: {message}"
        app.failures += 1
        app.last_failure = message
        error_type = "startup_timeout" if kind == "startup_timeout" else "runner_scheduling_failure"
        log.warning(
            "runner_start_failed",
            app=app.app_id,
            runner=runner_id,
            kind=kind,
            error=message,
            failures=app.failures,
        )
        # An environment that did not build fails the same way on every start until the
        # requirements change (``yurt.envs`` records it): waiting callers hear it at once.
        failure = StartFailure(
            app.app_id,
            runner_id,
            error_type,
            f"{message} (nomad alloc logs {runner_id})",
            final=kind == "environment",
        )
        self._tell(failure)

    def _tell(self, failure: StartFailure) -> None:
        for listener in self._listeners:
            try:
                listener(failure)
            except Exception:
                log.exception(
                    "failure_listener_failed", app=failure.app_id, runner=failure.runner_id
                )

    def _chore(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)


def placement_detail(app: _App, found: Unplaced) -> str:
    """The one line a caller waiting for a runner Nomad cannot place is told."""
    runners = "a runner" if found.count == 1 else f"{found.count} runners"
    ask = f"; each asks for {app.ask}" if app.ask else ""
    return (
        f"Nomad cannot place {runners} of {app.app_id}: {found.reasons}{ask} "
        f"(nomad eval status {found.eval_id[:8]})"
    )
