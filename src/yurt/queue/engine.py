"""The durable queue: accepts requests, runs them on runners with the queue-path rules, and
keeps their results.

Execution is at-least-once: a request is recorded before it is acknowledged, and one that was in
progress when the router died runs again after a restart.

The engine only wires and acts: a submission is admitted and recorded by the ``Intake``, each
request's memory is the ``JobTable``'s, its state moves only by ``model.move``, an attempt on a
runner is an ``Attempt``, what follows it is the pure ``decide``, and the router is reached only
through ``EnginePort``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Literal

import structlog

from yurt.config import QueueConfig
from yurt.errors import RequestError
from yurt.queue.attempt import Attempt, InFlight, LogEntries
from yurt.queue.backlog import AppBacklog
from yurt.queue.completion import Completions, best_effort
from yurt.queue.decide import (
    Complete,
    Outcome,
    Retry,
    Unsent,
    decide,
    recovered,
    unsent,
)
from yurt.queue.intake import Intake
from yurt.queue.jobtable import JobTable
from yurt.queue.model import Header, Job, Routing, State, Step, move
from yurt.queue.ports import EnginePort, RouterLink, RouterPort
from yurt.queue.results import cancelled, error_result, not_started, undeployed
from yurt.queue.runnerio import fetch_logs, signal_cancel
from yurt.queue.store import QueueStore, Record
from yurt.queue.webhooks import WebhookSender
from yurt.quota import Quotas
from yurt.router.dispatch import AppRoute, Slot

log = structlog.get_logger("yurt.queue")

CancelOutcome = Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]


class QueueEngine:
    """Every app's queue, the requests in flight, and what they wait on."""

    def __init__(
        self,
        store: QueueStore,
        config: QueueConfig,
        router: RouterPort,
        webhooks: WebhookSender | None = None,
        wall: Callable[[], float] = time.time,
        quotas: Quotas | None = None,
    ) -> None:
        self.store = store
        self.config = config
        # The router's server is wrapped in the one adapter that reads its parts.
        self.router: EnginePort = RouterLink(router)
        self._wall = wall
        self.table = JobTable(quotas)  # accepted and not completed
        self.backlogs: dict[str, AppBacklog] = {}
        self._in_flight = InFlight()  # attempts (and cancels)
        self._purger: asyncio.Task[None] | None = None
        self.completions = Completions(store, self.table, self.router, webhooks, wall)
        self._complete = self.completions.complete
        self.intake = Intake(store, self.table, self.router, config, wall)
        self._start_failures: dict[str, int] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (looked up once: each lookup costs a system call)."""
        return self.table.loop

    # -- lifecycle ---------------------------------------------------------------------------

    def add_app(self, route: AppRoute) -> int:
        """Serve ``route``'s queue, taking back what a previous router left unfinished."""
        backlog = AppBacklog(
            lambda: iter(route.slots.values()),
            lambda job, slot: self._start(route, job, slot),
            time.monotonic,
        )
        self.backlogs[route.app_id] = backlog
        route.backlog = backlog
        self.table.load_logs(self.store.attempt_logs(route.app_id))
        unfinished = self.store.unfinished(route.app_id)
        recovered = sum(self._recover(route, backlog, job) for job in unfinished)
        if recovered:
            log.info("queue_recovered", app=route.app_id, requests=recovered)
            route.serve_backlog()
        return recovered

    def _recover(self, route: AppRoute, backlog: AppBacklog, job: Job) -> bool:
        """Take back ``job``, which a previous router left unfinished; True if it queues."""
        self.table.add(job, taken_back=True)
        done = recovered(job, self.config, route.spec.skip_retry_conditions)
        if done is not None:
            if not job.cancel_requested:
                attempts = job.attempts
                log.info("queue_not_retried_after_restart", request_id=job.id, attempts=attempts)
            self._complete(job, done.result)
            return False
        if job.attempts:
            self.store.requeued(job)
        backlog.push(job)
        self._arm_deadline(job)
        return True

    def remove_app(self, app_id: str, error: RequestError) -> int:
        """The app is undeployed: its queued requests complete with ``error`` now; one in
        progress completes with its runner's answer, or with ``error`` should it need another
        attempt. Completed results stay readable until purged. Returns how many completed."""
        backlog = self.backlogs.pop(app_id, None)
        self._start_failures.pop(app_id, None)
        if backlog is None:
            return 0
        backlog.close()
        waiting = backlog.take_all()
        for job in waiting:
            self._complete(job, error_result(error.status, error.error_type, error.detail))
        return len(waiting)

    def start(self) -> None:
        """Start purging old results."""
        self._purger = asyncio.create_task(
            self.completions.purge_loop(self.config, lambda: list(self.backlogs))
        )

    def close(self) -> None:
        """Start nothing more (the router is stopping); wake every status stream to end."""
        for backlog in self.backlogs.values():
            backlog.close()
        self.table.wake_all()

    async def stop(self, grace: float = 5.0) -> None:
        """Let attempts in flight finish within ``grace``; those cut short stay IN_PROGRESS in
        the store and run again after a restart."""
        if self._purger is not None:
            self._purger.cancel()
        self.table.cancel_timers()
        self.close()
        await self._in_flight.drain(grace)
        if self._purger is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        self.store.commit()

    # -- accepting -----------------------------------------------------------------------------

    async def submit(
        self,
        route: AppRoute,
        endpoint: str,
        query: str,
        headers: Iterable[Header],
        body: bytes,
        routing: Routing,
        owner: str | None = None,
    ) -> Job:
        """Accept a request: recorded durably before this returns, then started or queued.

        ``owner``: the key that submitted it (``yurt.access``)."""
        backlog = self.backlogs.get(route.app_id)
        if backlog is None:  # undeployed since the path was resolved
            raise RequestError(
                f"no app '{route.app_id}' on this router", status=404, error_type="app_not_found"
            )
        job = self.intake.admit(route, backlog, endpoint, query, headers, body, routing, owner)
        # A runner with room and nobody waiting: the request starts at once, and is recorded
        # once, in progress, rather than queued and then started (two writes, two commits).
        slot = self.intake.slot_at_once(route, backlog, job)
        if slot is not None:
            self._begin(job, slot)
        await self.intake.record(route, job, slot)
        self._accepted(route, backlog, job, slot)
        return job

    def _accepted(self, route: AppRoute, backlog: AppBacklog, job: Job, slot: Slot | None) -> None:
        """``job`` is recorded: run it on ``slot`` if it still may, else queue it."""
        if self.backlogs.get(job.app_id) is not backlog:  # undeployed while it was written
            if slot is not None:
                route.release(slot)
            self._complete(job, undeployed(job.app_id))
            return
        if slot is not None and not slot.retired and not backlog.closed:
            self._launch(route, job, slot)
            return
        if slot is not None:
            # Its runner left, or the router stops, while the record was written: queued
            # instead, in the store too (its attempts and its start deadline are intact).
            route.release(slot)
            self._unstart(job)
        self._queue(route, backlog, job)

    # -- reading -------------------------------------------------------------------------------

    def position(self, job: Job) -> int:
        """How many requests start before ``job``."""
        return self.backlogs[job.app_id].position(job)

    def depth(self, app_id: str) -> tuple[int, int] | None:
        """How many of the app's requests are queued and how many run; None: not served."""
        backlog = self.backlogs.get(app_id)
        if backlog is None:
            return None
        return len(backlog), self.table.running(app_id)

    def record(self, request_id: str) -> Job | Record | None:
        """The live job, else the completed record (recent ones from memory), else None."""
        return self.completions.record(request_id)

    def waiter(self, request_id: str) -> asyncio.Future[None]:
        """A future done at the next change of ``request_id``'s state.

        Take it *before* reading the state: a change between the read and the wait is then
        not missed.
        """
        return self.table.waiter(request_id)

    async def live_logs(self, job: Job) -> LogEntries:
        """Logs of an in-progress request so far: earlier attempts' and the runner's."""
        logs = self.table.logs(job.id)
        slot = self.router.slot(job.app_id, job.runner_id)
        if job.state is State.IN_PROGRESS and slot is not None:
            logs.extend(await fetch_logs(slot, job.id, forget=False))
        return logs

    # -- runners that do not start -----------------------------------------------------------

    def start_failed(
        self, app_id: str, status: int, error_type: str, detail: str, *, final: bool = False
    ) -> int:
        """A runner of an app with none up failed to start; after ``max_start_failures`` in a
        row (at once when ``final``: nothing can start one), the requests waiting for it
        complete with that failure. Returns how many did."""
        failures = self._start_failures[app_id] = self._start_failures.get(app_id, 0) + 1
        backlog = self.backlogs.get(app_id)
        if backlog is None or (failures < self.config.max_start_failures and not final):
            return 0
        waiting = backlog.take_all()
        for job in waiting:
            why = detail if final else f"{detail} ({failures} runner starts failed in a row)"
            self._complete(job, error_result(status, error_type, why))
        return len(waiting)

    def runner_up(self, app_id: str) -> None:
        """The app has a routable runner again."""
        self._start_failures.pop(app_id, None)

    # -- deadlines -----------------------------------------------------------------------------

    def _arm_deadline(self, job: Job) -> None:
        start_by = job.start_by
        if start_by is None or job.attempts:
            return
        self.table.arm_deadline(job, max(0.0, start_by - self._wall()), self._expire)

    def _expire(self, job: Job) -> None:
        backlog = self.backlogs.get(job.app_id)
        if job.state is not State.IN_QUEUE or backlog is None or not backlog.remove(job):
            return
        log.info("queue_start_deadline_passed", request_id=job.id, app=job.app_id)
        why = self.router.unplaced(job.app_id)
        self._complete(job, not_started(job.routing.start_timeout, why))

    # -- running -------------------------------------------------------------------------------

    def _start(self, route: AppRoute, job: Job, slot: Slot) -> None:
        self._begin(job, slot)
        best_effort("started", job.id, lambda: self.store.started(job))
        # The store must say started before the runner hears of it: the commit was scheduled
        # (call_soon) by this transaction's first write, so it runs before the launch.
        self.loop.call_soon(self._launch_started, route, job, slot)

    def _launch_started(self, route: AppRoute, job: Job, slot: Slot) -> None:
        backlog = self.backlogs.get(job.app_id)
        why = unsent(job, slot, backlog)
        if why is None:
            self._launch(route, job, slot)
            return
        route.release(slot)  # the runner never hears of it
        if why is Unsent.UNDEPLOYED:
            self._complete(job, undeployed(job.app_id))
        elif why is Unsent.CANCELLED:
            self._complete(job, cancelled(job.id))
        elif why is Unsent.RETIRED and backlog is not None:
            # The attempt never began, and the request goes back to the head of the queue.
            self._unstart(job)
            self._queue(route, backlog, job, front=True)
        # STOPPING: as an attempt cut short, it runs again after a restart if it may (the
        # store says IN_PROGRESS).

    def _queue(
        self, route: AppRoute, backlog: AppBacklog, job: Job, *, front: bool = False
    ) -> None:
        """Queue ``job`` (a retry ``front``), with its start deadline, and offer it a slot."""
        backlog.push(job, front=front)
        self._arm_deadline(job)
        route.serve_backlog()

    def _begin(self, job: Job, slot: Slot) -> None:
        """``job`` starts on ``slot``: its state in memory."""
        self.table.drop_timers(job.id)  # a backoff timer must not cut the next attempt's short
        move(job, Step.BEGIN, runner_id=slot.runner_id, now=self._wall())

    def _unstart(self, job: Job) -> None:
        """Undo ``_begin`` for an attempt that was never sent, in the store too."""
        move(job, Step.UNSTART)
        best_effort("unstarted", job.id, lambda: self.store.started(job))

    def _launch(self, route: AppRoute, job: Job, slot: Slot) -> None:
        """Make the attempt: call the runner, then act on its answer."""
        if job.attempts == 1 and job.started_at is not None:
            self.router.waited(job.app_id, max(0.0, job.started_at - job.created_at))
        self.table.notify(job.id)
        attempt = Attempt(
            job, route, slot, done=self._concluded, in_flight=self._in_flight, loop=self.loop
        )
        attempt.run()

    def _concluded(self, attempt: Attempt, outcome: Outcome, logs: LogEntries) -> None:
        """The attempt ended in ``outcome``: act on it, then hand its slot on."""
        route, job, slot = attempt.route, attempt.job, attempt.slot
        try:
            if outcome.verdict.terminate:
                self.router.terminate_slot(route, slot, outcome.verdict.reason)
            # Before the slot is released: a retry is at the front when the slot is handed on.
            self.table.add_logs(job.id, logs)
            skip, served = route.spec.skip_retry_conditions, job.app_id in self.backlogs
            then = decide(job, outcome, self.config, skip, served=served)
            if isinstance(then, Complete):
                self._complete(job, then.result)
            else:
                self._retry(route, job, outcome.result.status, then)
        finally:
            route.release(slot)

    def _retry(self, route: AppRoute, job: Job, status: int, then: Retry) -> None:
        """Send ``job`` back to the head of its queue, after its backoff if it has one."""
        log.info(
            "queue_retry",
            request_id=job.id,
            app=job.app_id,
            attempt=job.attempts,
            status=status,
            reason=then.reason,
        )
        move(job, Step.RETRY)
        self.router.retried(job.app_id)
        logs_so_far = self.table.logs(job.id)
        best_effort("requeued", job.id, lambda: self.store.requeued(job, logs_so_far))
        if then.backoff is not None:
            job.not_before = time.monotonic() + then.backoff
            self.table.arm_backoff(job, then.backoff, lambda job: self._retry_due(route, job))
        self.backlogs[job.app_id].push(job, front=True)
        self.table.notify(job.id)
        route.serve_backlog()

    def _retry_due(self, route: AppRoute, job: Job) -> None:
        # Due now, whatever the clocks say: a timer may fire a hair before its time.
        job.not_before = 0.0
        route.serve_backlog()

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, request_id: str) -> CancelOutcome:
        """Cancel a request: taken out of the queue, or its runner told to stop."""
        job = self.table.get(request_id)
        if job is None:
            stored = self.completions.cancel_stored(request_id)
            if stored is None:
                return "NOT_FOUND"
            return "CANCELLATION_REQUESTED" if stored else "ALREADY_COMPLETED"
        if job.state is State.IN_QUEUE:
            self.backlogs[job.app_id].remove(job)
            self._complete(job, cancelled(job.id))
            return "CANCELLATION_REQUESTED"
        job.cancel_requested = True
        best_effort("cancel", job.id, lambda: self.store.cancel_requested(job.id))
        self._in_flight.spawn(self.loop, self._signal_cancel(job))
        return "CANCELLATION_REQUESTED"

    async def _signal_cancel(self, job: Job) -> None:
        slot = self.router.slot(job.app_id, job.runner_id)
        if slot is not None:
            await signal_cancel(slot, job.endpoint, job.id)
