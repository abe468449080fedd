"""The durable queue: accepts requests, runs them on runners with the queue-path rules, and
keeps their results.

Execution is at-least-once: a request is recorded before it is acknowledged, and one that was in
progress when the router died runs again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from asyncio import Future
from collections.abc import Callable, Iterable
from typing import Any, Literal

import structlog

from yurt.backoff import capped_backoff
from yurt.config import QueueConfig
from yurt.errors import RequestError
from yurt.metrics import tally
from yurt.queue.backlog import AppBacklog
from yurt.queue.model import Header, Job, Result, Routing, State
from yurt.queue.ports import RouterPort
from yurt.queue.recent import RecentRecords
from yurt.queue.results import cancelled, error_result, upstream_result, webhook_body
from yurt.queue.runnerio import fetch_logs, note_hints, signal_cancel
from yurt.queue.store import QueueStore, Record
from yurt.queue.webhooks import WebhookSender
from yurt.quota import Quotas
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.http import end_to_end, new_ordered_id
from yurt.router.metrics import QUEUE
from yurt.router.pool import UpstreamError, UpstreamResponse
from yurt.router.rules import (
    QueueVerdict,
    direct_error,
    queue_error,
    queue_status,
    should_retry,
)

log = structlog.get_logger("yurt.queue")

CancelOutcome = Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]
# An attempt cut short by the router's end is judged as a broken connection would be.
CUT_SHORT = queue_error("disconnected")


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
        # Per-key counts of unfinished requests (router/gate.py): a request counts until it
        # completes, across restarts.
        self.quotas = quotas if quotas is not None and quotas.active else None
        self.config = config
        self.router = router
        self.webhooks = webhooks
        self._wall = wall
        self.jobs: dict[str, Job] = {}  # accepted and not completed
        self.backlogs: dict[str, AppBacklog] = {}
        self._changed: dict[str, asyncio.Future[None]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._backing_off: dict[str, asyncio.TimerHandle] = {}  # retries waiting their turn
        self._tasks: set[asyncio.Future[Any]] = set()  # attempts (and cancels) in flight
        self._purger: asyncio.Task[None] | None = None
        self._logs: dict[str, list[dict[str, Any]]] = {}  # earlier attempts' logs
        self._recent = RecentRecords()
        self._start_failures: dict[str, int] = {}
        self._held_bytes: dict[str, int] = {}  # bodies of unfinished requests, per app
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, once known

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (looked up once: each lookup costs a system call)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

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
        recovered = 0
        self._logs.update(self.store.attempt_logs(route.app_id))
        for job in self.store.unfinished(route.app_id):
            self.jobs[job.id] = job
            if self.quotas is not None and job.owner is not None:
                self.quotas.hold(job.owner)
            self._held_bytes[job.app_id] = self._held_bytes.get(job.app_id, 0) + len(job.body)
            if job.cancel_requested:  # cancelled while in progress when the router stopped
                self._complete(job, cancelled(job.id))
                continue
            if job.attempts and not self._may_run_again(route, job):
                continue
            if job.attempts:
                self.store.requeued(job)
            backlog.push(job)
            self._arm_deadline(job)
            recovered += 1
        if recovered:
            log.info("queue_recovered", app=route.app_id, requests=recovered)
            route.serve_backlog()
        return recovered

    def _may_run_again(self, route: AppRoute, job: Job) -> bool:
        """An attempt was cut short by the router's end: run it again as a broken connection
        would be, within the attempt limit, ``x-fal-no-retry`` and the app's conditions."""
        if should_retry(
            CUT_SHORT,
            attempts=job.attempts,
            max_attempts=self.config.max_attempts,
            no_retry=job.routing.no_retry,
            skip=route.spec.skip_retry_conditions,
        ):
            return True
        log.info("queue_not_retried_after_restart", request_id=job.id, attempts=job.attempts)
        self._complete(
            job,
            error_result(
                503,
                "runner_disconnected",
                f"the router stopped during attempt {job.attempts} of this request, and it is "
                "not retried (x-fal-no-retry, skip_retry_conditions or max_attempts)",
            ),
        )
        return False

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

    def _undeployed(self, job: Job) -> None:
        """Complete ``job``, whose app was undeployed before it could run (again)."""
        detail = f"{job.app_id} was undeployed before this request completed"
        self._complete(job, error_result(410, "app_undeployed", detail))

    def start(self) -> None:
        """Start purging old results."""
        self._purger = asyncio.create_task(self._purge_loop())

    def close(self) -> None:
        """Start nothing more (the router is stopping); wake every status stream to end."""
        for backlog in self.backlogs.values():
            backlog.close()
        changed, self._changed = self._changed, {}
        for fut in changed.values():
            if not fut.done():
                fut.set_result(None)

    async def stop(self, grace: float = 5.0) -> None:
        """Let attempts in flight finish within ``grace``; those cut short stay IN_PROGRESS in
        the store and run again after a restart."""
        if self._purger is not None:
            self._purger.cancel()
        for timers in (self._expiry, self._backing_off):
            for handle in timers.values():
                handle.cancel()
        self.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Again while grace is left: an answer that came in may have started a log fetch.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._purger is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        self.store.commit()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_interval)
            cutoff = self._wall() - self.config.retention
            try:
                n = self.store.purge(cutoff, served=list(self.backlogs))
            except sqlite3.Error as exc:  # try again next time
                log.error("queue_purge_failed", error=str(exc))
                continue
            self._recent.forget_before(cutoff)
            if n:
                log.info("queue_purged", requests=n)

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
        self._admit(route, backlog, len(body))
        job = Job(
            id=new_ordered_id(),
            app_id=route.app_id,
            endpoint=endpoint,
            query=query,
            headers=end_to_end(headers),
            body=body,
            routing=routing,
            created_at=self._wall(),
            owner=owner,
        )
        # A runner with room and nobody waiting: the request starts at once, and is recorded
        # once, in progress, rather than queued and then started (two writes, two commits).
        slot = self._free_slot(route, backlog, job)
        if slot is not None:
            self._begin(job, slot)
        try:
            self.store.add(job)
            await self.store.durable()
        except BaseException as exc:
            if slot is not None:
                route.release(slot)  # whatever ended the wait: the slot must not stay taken
            if not isinstance(exc, sqlite3.Error):
                # Cancelled while its record was written: never acknowledged, so never run.
                self._record("withdrawn", job.id, lambda: self.store.withdraw(job.id))
                raise
            # Not recorded, so not accepted: the caller must hear so and may try again.
            raise RequestError(
                f"the queue could not record the request: {exc}",
                status=503,
                error_type="queue_unavailable",
            ) from exc
        self.jobs[job.id] = job
        self._held_bytes[job.app_id] = self._held_bytes.get(job.app_id, 0) + len(job.body)
        tally(self.router.stats.submitted, (job.app_id,))
        if self.backlogs.get(job.app_id) is not backlog:  # undeployed while it was written
            if slot is not None:
                route.release(slot)
            self._undeployed(job)
            return job
        if slot is not None and not slot.retired and not backlog.closed:
            self._launch(route, job, slot)
            return job
        if slot is not None:
            # Its runner left, or the router stops, while the record was written: queued
            # instead, in the store too (its attempts and its start deadline are intact).
            route.release(slot)
            self._unstart(job)
        backlog.push(job)
        self._arm_deadline(job)
        route.serve_backlog()
        return job

    def _admit(self, route: AppRoute, backlog: AppBacklog, size: int) -> None:
        """Raise the ``RequestError`` that refuses a submission of ``size`` bytes, if any."""
        if (refused := self.router.unplaceable(route)) is not None:
            raise refused  # not accepted: it could only fail
        held = self._held_bytes.get(route.app_id, 0)
        if len(backlog) >= self.config.max_queued or held + size > self.config.max_queued_bytes:
            raise RequestError(
                f"{route.app_id} has {len(backlog)} requests waiting ({held} bytes of bodies), "
                "the most its queue takes (QueueConfig.max_queued, max_queued_bytes); "
                "try again later",
                status=429,
                error_type="queue_full",
            )

    def _free_slot(self, route: AppRoute, backlog: AppBacklog, job: Job) -> Slot | None:
        """A slot ``job`` may start on at once, taken; None if it must queue.

        Only for requests a restart would run again were the router to die between the
        write and the call: the store then says started, the runner never heard of it.
        """
        if len(backlog) or backlog.closed or job.routing.hint is not None:
            return None
        if not should_retry(
            CUT_SHORT,
            attempts=1,
            max_attempts=self.config.max_attempts,
            no_retry=job.routing.no_retry,
            skip=route.spec.skip_retry_conditions,
        ):
            return None
        return route.try_acquire_unwaited()

    def position(self, job: Job) -> int:
        """How many requests start before ``job``."""
        return self.backlogs[job.app_id].position(job)

    def depth(self, app_id: str) -> tuple[int, int] | None:
        """How many of the app's requests are queued and how many run; None: not served."""
        backlog = self.backlogs.get(app_id)
        if backlog is None:
            return None
        running = sum(
            1
            for job in self.jobs.values()
            if job.app_id == app_id and job.state is State.IN_PROGRESS
        )
        return len(backlog), running

    def record(self, request_id: str) -> Job | Record | None:
        """The live job, else the completed record (recent ones from memory), else None."""
        return (
            self.jobs.get(request_id) or self._recent.get(request_id) or self.store.get(request_id)
        )

    def waiter(self, request_id: str) -> asyncio.Future[None]:
        """A future done at the next change of ``request_id``'s state.

        Take it *before* reading the state: a change between the read and the wait is then
        not missed.
        """
        fut = self._changed.get(request_id)
        if fut is None:
            fut = self.loop.create_future()
            if request_id in self.jobs:
                self._changed[request_id] = fut
            else:
                fut.set_result(None)  # completed (or unknown): nothing more will change
        return fut

    def _record(self, what: str, request_id: str, write: Callable[[], None]) -> None:
        # Past acceptance, memory is the truth: a write the store refuses is logged, and at
        # worst the request runs again after a restart (at-least-once).
        try:
            write()
        except sqlite3.Error as exc:
            log.error("queue_write_failed", what=what, request_id=request_id, error=str(exc))

    def _notify(self, request_id: str) -> None:
        fut = self._changed.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

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
        delay = max(0.0, start_by - self._wall())
        self._expiry[job.id] = self.loop.call_later(delay, self._expire, job)

    def _expire(self, job: Job) -> None:
        self._expiry.pop(job.id, None)
        backlog = self.backlogs.get(job.app_id)
        if job.state is not State.IN_QUEUE or backlog is None or not backlog.remove(job):
            return
        timeout = job.routing.start_timeout
        log.info("queue_start_deadline_passed", request_id=job.id, app=job.app_id)
        why = self.router.backend.unplaced(job.app_id)
        because = f"; {why.detail}" if why is not None else ""
        self._complete(
            job,
            error_result(
                504,
                "request_timeout",
                f"the request did not start within its X-Fal-Request-Timeout of {timeout:g}s"
                + because,
                x_fal_request_timeout_type="user",
            ),
        )

    # -- running -------------------------------------------------------------------------------

    def _start(self, route: AppRoute, job: Job, slot: Slot) -> None:
        self._begin(job, slot)
        self._record("started", job.id, lambda: self.store.started(job))
        # The store must say started before the runner hears of it: the commit was scheduled
        # (call_soon) by this transaction's first write, so it runs before the launch.
        self.loop.call_soon(self._launch_started, route, job, slot)

    def _launch_started(self, route: AppRoute, job: Job, slot: Slot) -> None:
        backlog = self.backlogs.get(job.app_id)
        if backlog is None:  # undeployed meanwhile: the runner never hears of it
            route.release(slot)
            self._undeployed(job)
        elif backlog.closed:
            # The router began to stop meanwhile: as an attempt cut short, it runs again after
            # a restart if it may (the store says IN_PROGRESS).
            route.release(slot)
        elif job.cancel_requested:  # cancelled meanwhile: the runner never hears of it
            route.release(slot)
            self._complete(job, cancelled(job.id))
        elif slot.retired:
            # Its runner is being stopped (another answer said so meanwhile): the attempt never
            # began, and the request goes back to the head of the queue.
            route.release(slot)
            self._unstart(job)
            backlog.push(job, front=True)
            self._arm_deadline(job)
            route.serve_backlog()
        else:
            self._launch(route, job, slot)

    def _unstart(self, job: Job) -> None:
        """Undo ``_begin`` for an attempt that was never sent, in the store too."""
        job.state, job.attempts = State.IN_QUEUE, job.attempts - 1
        job.started_at, job.runner_id = None, None
        self._record("unstarted", job.id, lambda: self.store.started(job))

    def _begin(self, job: Job, slot: Slot) -> None:
        """``job`` starts on ``slot``: its state in memory."""
        self._drop_timers(job.id)  # a backoff timer must not cut the next attempt's short
        job.state = State.IN_PROGRESS
        job.attempts += 1
        job.started_at = self._wall()
        job.runner_id = slot.runner_id

    def _launch(self, route: AppRoute, job: Job, slot: Slot) -> None:
        """Make the attempt: call the runner, then act on its answer."""
        if job.attempts == 1 and job.started_at is not None:
            waited = max(0.0, job.started_at - job.created_at)
            self.router.stats.queue_wait.observe((job.app_id,), waited)
        self._notify(job.id)
        # Filtered once, at submission: only the request id is added per attempt.
        headers = [*job.headers, (b"x-fal-request-id", job.id.encode())]
        t0 = time.monotonic()
        timeout = route.spec.request_timeout
        sent = slot.pool.send(b"POST", job.target, headers, job.body, timeout)
        if sent is None:  # no idle connection to the runner: a task connects and sends
            task = self.loop.create_task(self._attempt(route, job, slot, headers, t0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        # Most attempts need no task: the answer is handled in the future's callback.
        self._tasks.add(sent)
        sent.add_done_callback(functools.partial(self._answered, route, job, slot, t0))

    def _answered(
        self, route: AppRoute, job: Job, slot: Slot, t0: float, sent: Future[UpstreamResponse]
    ) -> None:
        """The runner's answer to an attempt sent on an idle connection."""
        self._tasks.discard(sent)
        if sent.cancelled():  # the router stops: the store still says IN_PROGRESS
            route.release(slot)
            return
        try:
            try:
                outcome: UpstreamResponse | UpstreamError = sent.result()
            except UpstreamError as exc:
                outcome = exc
            verdict, result, cancelled_first, has_logs = self._judge(job, slot, outcome, t0)
        except Exception:
            self._conclude(route, job, slot, *self._mishandled(job))
            return
        if has_logs:  # rare: the logs are fetched in a task of their own
            task = self.loop.create_task(
                self._with_logs(route, job, slot, verdict, result, cancelled_first)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._conclude(route, job, slot, verdict, result, [], cancelled_first)

    async def _with_logs(
        self,
        route: AppRoute,
        job: Job,
        slot: Slot,
        verdict: QueueVerdict,
        result: Result,
        cancelled_first: bool,
    ) -> None:
        try:
            logs = await fetch_logs(slot, job.id, forget=True)
        except asyncio.CancelledError:
            route.release(slot)  # router stopping: the store still says IN_PROGRESS
            raise
        except Exception:
            self._conclude(route, job, slot, *self._mishandled(job))
            return
        self._conclude(route, job, slot, verdict, result, logs, cancelled_first)

    async def _attempt(
        self, route: AppRoute, job: Job, slot: Slot, headers: list[Header], t0: float
    ) -> None:
        """An attempt that needs a new connection to the runner first."""
        try:
            try:
                outcome: UpstreamResponse | UpstreamError = await slot.pool.request(
                    b"POST", job.target, headers, job.body, timeout=route.spec.request_timeout
                )
            except UpstreamError as exc:
                outcome = exc
            verdict, result, cancelled_first, has_logs = self._judge(job, slot, outcome, t0)
        except asyncio.CancelledError:
            route.release(slot)  # router stopping: the store still says IN_PROGRESS
            raise
        except Exception:
            self._conclude(route, job, slot, *self._mishandled(job))
            return
        if has_logs:
            await self._with_logs(route, job, slot, verdict, result, cancelled_first)
        else:
            self._conclude(route, job, slot, verdict, result, [], cancelled_first)

    def _judge(
        self, job: Job, slot: Slot, outcome: UpstreamResponse | UpstreamError, t0: float
    ) -> tuple[QueueVerdict, Result, bool, bool]:
        """The attempt's verdict and result, whether a cancel came before the answer, and
        whether the runner has logs of it to fetch."""
        if isinstance(outcome, UpstreamError):
            failure = direct_error(outcome.kind)
            assert failure.status is not None
            result = error_result(failure.status, failure.error_type, failure.detail)
            return queue_error(outcome.kind), result, job.cancel_requested, False
        elapsed = time.monotonic() - t0
        found = {k.lower(): v for k, v in outcome.headers}
        verdict = queue_status(outcome.status, found.get(b"x-fal-needs-retry"))
        result = upstream_result(outcome.status, outcome.headers, outcome.body, elapsed)
        note_hints(slot, found.get(b"x-yurt-runner-hints"))
        return verdict, result, job.cancel_requested, b"x-yurt-log-count" in found

    def _mishandled(self, job: Job) -> tuple[QueueVerdict, Result, list[dict[str, Any]], bool]:
        """A bug of ours handling the answer: the request completes with a 500 rather than
        staying IN_PROGRESS with its slot taken."""
        log.exception("queue_attempt_failed", request_id=job.id, app=job.app_id)
        result = error_result(
            500, "internal_error", "the router failed handling the runner's answer"
        )
        return QueueVerdict(terminate=False, retry=False), result, [], job.cancel_requested

    def _conclude(
        self,
        route: AppRoute,
        job: Job,
        slot: Slot,
        verdict: QueueVerdict,
        result: Result,
        logs: list[dict[str, Any]],
        cancelled_first: bool,
    ) -> None:
        try:
            if verdict.terminate:
                self.router.terminate_slot(route, slot, verdict.reason)
            # Before the slot is released: a retry is at the front when the slot is handed on.
            self._after(route, job, verdict, result, logs, cancelled_first)
        finally:
            route.release(slot)

    def _after(
        self,
        route: AppRoute,
        job: Job,
        verdict: QueueVerdict,
        result: Result,
        logs: list[dict[str, Any]],
        cancelled_first: bool,
    ) -> None:
        if logs:
            self._logs.setdefault(job.id, []).extend(logs)
        retryable = should_retry(
            verdict,
            attempts=job.attempts,
            max_attempts=self.config.max_attempts,
            no_retry=job.routing.no_retry,
            skip=route.spec.skip_retry_conditions,
        )
        if retryable and not job.cancel_requested and job.app_id not in self.backlogs:
            self._undeployed(job)  # its runner stopped as its app was undeployed
            return
        if retryable and not job.cancel_requested:
            log.info(
                "queue_retry",
                request_id=job.id,
                app=job.app_id,
                attempt=job.attempts,
                status=result.status,
                reason=verdict.reason or result.error_type,
            )
            job.state = State.IN_QUEUE
            tally(self.router.stats.retries, (job.app_id,))
            if job.runner_id is not None:
                job.avoid.add(job.runner_id)
            logs_so_far = list(self._logs.get(job.id, []))
            self._record("requeued", job.id, lambda: self.store.requeued(job, logs_so_far))
            if not verdict.terminate:
                # The runner is kept (504, 429, the app asked): trying again at once would
                # burn every attempt in milliseconds on what is likely a passing condition.
                delay = self._backoff(job.attempts)
                job.not_before = time.monotonic() + delay
                self._backing_off[job.id] = self.loop.call_later(delay, self._retry_due, route, job)
            self.backlogs[job.app_id].push(job, front=True)
            self._notify(job.id)
            route.serve_backlog()
            return
        # The cancel decides the outcome if the runner had it before answering (its error may
        # be the endpoint giving up), or if it is what stops a retry; an error the endpoint
        # answered before any cancel stands.
        decided = cancelled_first or retryable
        if job.cancel_requested and decided and not result.ok and result.status != 499:
            result = cancelled(job.id)
        self._complete(job, result)

    def _retry_due(self, route: AppRoute, job: Job) -> None:
        # Due now, whatever the clocks say: a timer may fire a hair before its time.
        self._backing_off.pop(job.id, None)
        job.not_before = 0.0
        route.serve_backlog()

    def _backoff(self, attempts: int) -> float:
        cfg = self.config
        return capped_backoff(attempts, first=cfg.retry_backoff, cap=cfg.retry_backoff_max)

    def _drop_timers(self, request_id: str) -> None:
        """Cancel the request's start deadline and retry backoff, if armed."""
        if not (self._expiry or self._backing_off):
            return  # the common case: nothing armed for anyone
        for timers in (self._expiry, self._backing_off):
            handle = timers.pop(request_id, None)
            if handle is not None:
                handle.cancel()

    def _complete(self, job: Job, result: Result) -> None:
        self._drop_timers(job.id)
        job.state = State.COMPLETED
        if self.jobs.pop(job.id, None) is not None and self.quotas is not None and job.owner:
            self.quotas.release(job.owner)
        logs = self._logs.pop(job.id, [])
        now = self._wall()
        self._held_bytes[job.app_id] = self._held_bytes.get(job.app_id, 0) - len(job.body)
        job.body = b""  # no longer counted as held: nothing may keep it alive now
        self._record("completed", job.id, lambda: self.store.completed(job.id, result, logs, now))
        took = max(0.0, now - job.created_at)
        self.router.stats.served(job.app_id, QUEUE, result.status, took)
        self._recent.add(
            Record(
                job.id,
                job.app_id,
                State.COMPLETED,
                job.created_at,
                job.started_at,
                now,
                result,
                logs,
                job.owner,
            )
        )
        # Per request, like an access log: debug when it succeeded, info when it did not.
        (log.debug if result.ok else log.info)(
            "queue_completed",
            request_id=job.id,
            app=job.app_id,
            status=result.status,
            attempts=job.attempts,
            error_type=result.error_type,
        )
        if job.routing.webhook and self.webhooks is not None:
            body = webhook_body(job.id, result)
            url = job.routing.webhook
            self._record("webhook", job.id, lambda: self.store.add_webhook(job.id, url, body, now))
            self.webhooks.poke()
        self._notify(job.id)

    async def live_logs(self, job: Job) -> list[dict[str, Any]]:
        """Logs of an in-progress request so far: earlier attempts' and the runner's."""
        logs = list(self._logs.get(job.id, []))
        route = self.router.routes.get(job.app_id)
        slot = route.slots.get(job.runner_id or "") if route is not None else None
        if job.state is State.IN_PROGRESS and slot is not None:
            logs.extend(await fetch_logs(slot, job.id, forget=False))
        return logs

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, request_id: str) -> CancelOutcome:
        """Cancel a request: taken out of the queue, or its runner told to stop."""
        job = self.jobs.get(request_id)
        if job is None:
            record = self._recent.get(request_id) or self.store.get(request_id)
            if record is None:
                return "NOT_FOUND"
            if record.state is State.COMPLETED:
                return "ALREADY_COMPLETED"
            # Left by a router that served an app this one does not: nothing runs it now.
            self.store.completed(request_id, cancelled(request_id), [], self._wall())
            return "CANCELLATION_REQUESTED"
        if job.state is State.IN_QUEUE:
            self.backlogs[job.app_id].remove(job)
            self._complete(job, cancelled(job.id))
            return "CANCELLATION_REQUESTED"
        job.cancel_requested = True
        self._record("cancel", job.id, lambda: self.store.cancel_requested(job.id))
        task = asyncio.create_task(self._signal_cancel(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return "CANCELLATION_REQUESTED"

    async def _signal_cancel(self, job: Job) -> None:
        route = self.router.routes.get(job.app_id)
        slot = route.slots.get(job.runner_id or "") if route is not None else None
        if slot is None:
            return
        await signal_cancel(slot, job.endpoint, job.id)
