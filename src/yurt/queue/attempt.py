"""One attempt of a queued request on one runner: send it, judge the answer, fetch its logs.

An attempt has one path. Its request goes out on an idle connection to the runner when the
runner's pool has one (a future, with no task: most attempts), else in a task that connects
first; either way the answer lands in the same callback, is judged once by the rules table,
and the runner's logs of it are fetched when it says it has some. The attempt then hands its
``Outcome`` to ``done``, exactly once, and the engine decides (``decide``) and releases the
slot. Should the router stop meanwhile, the slot is released and nothing is handed on: the
store still says IN_PROGRESS, and the request runs again after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from yurt.queue.decide import Outcome
from yurt.queue.model import Job
from yurt.queue.results import error_result, upstream_result
from yurt.queue.runnerio import fetch_logs, note_hints
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.pool import UpstreamError, UpstreamResponse
from yurt.router.rules import QueueVerdict, direct_error, queue_error, queue_status

log = structlog.get_logger("yurt.queue")

LogEntries = list[dict[str, Any]]
Done = Callable[["Attempt", Outcome, LogEntries], None]


class InFlight:
    """The futures and tasks of attempts (and cancel signals) in flight, for a stop to await."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[Any]] = set()

    def __bool__(self) -> bool:
        return bool(self._futures)

    def spawn(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task held until it ends."""
        task = loop.create_task(coro)
        self._futures.add(task)
        task.add_done_callback(self._futures.discard)

    def track(self, future: asyncio.Future[Any]) -> None:
        """Hold ``future`` until ``forget``."""
        self._futures.add(future)

    def forget(self, future: asyncio.Future[Any]) -> None:
        """No longer hold ``future``."""
        self._futures.discard(future)

    async def drain(self, grace: float) -> None:
        """Let what is in flight end within ``grace`` seconds, then cancel what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Again while grace is left: an answer that came in may have started a log fetch.
        while self._futures and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._futures), timeout=left)
        futures = list(self._futures)
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)


def judge(
    job: Job, slot: Slot, answer: UpstreamResponse | UpstreamError, t0: float
) -> tuple[Outcome, bool]:
    """The attempt's outcome, and whether the runner has logs of it to fetch.

    Keeps the runner's ``x-yurt-runner-hints`` on ``slot`` as it goes.
    """
    if isinstance(answer, UpstreamError):
        failure = direct_error(answer.kind)
        assert failure.status is not None
        result = error_result(failure.status, failure.error_type, failure.detail)
        return Outcome(queue_error(answer.kind), result, job.cancel_requested), False
    elapsed = time.monotonic() - t0
    found = {k.lower(): v for k, v in answer.headers}
    verdict = queue_status(answer.status, found.get(b"x-fal-needs-retry"))
    result = upstream_result(answer.status, answer.headers, answer.body, elapsed)
    note_hints(slot, found.get(b"x-yurt-runner-hints"))
    return Outcome(verdict, result, job.cancel_requested), b"x-yurt-log-count" in found


def mishandled(job: Job) -> Outcome:
    """A bug of ours handling the answer: the request completes with a 500 rather than
    staying IN_PROGRESS with its slot taken. Call it while handling the exception."""
    log.exception("queue_attempt_failed", request_id=job.id, app=job.app_id)
    result = error_result(500, "internal_error", "the router failed handling the runner's answer")
    return Outcome(QueueVerdict(terminate=False, retry=False), result, job.cancel_requested)


class Attempt:
    """``job``'s attempt on ``slot`` of ``route``; ``run`` it once."""

    __slots__ = ("_done", "_in_flight", "_loop", "_t0", "job", "route", "slot")

    def __init__(
        self,
        job: Job,
        route: AppRoute,
        slot: Slot,
        *,
        done: Done,
        in_flight: InFlight,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.job, self.route, self.slot = job, route, slot
        self._done, self._in_flight, self._loop = done, in_flight, loop
        self._t0 = 0.0

    def run(self) -> None:
        """Send the request to the runner; its answer is handled when it comes."""
        job, slot = self.job, self.slot
        # Filtered once, at submission: only the request id is added per attempt.
        headers = [*job.headers, (b"x-fal-request-id", job.id.encode())]
        timeout = self.route.spec.request_timeout
        self._t0 = time.monotonic()
        sent = slot.pool.send(b"POST", job.target, headers, job.body, timeout)
        if sent is None:  # no idle connection to the runner: a task connects, then sends
            request = slot.pool.request(b"POST", job.target, headers, job.body, timeout)
            sent = self._loop.create_task(request)
        self._in_flight.track(sent)
        sent.add_done_callback(self._answered)

    def _answered(self, sent: asyncio.Future[UpstreamResponse]) -> None:
        self._in_flight.forget(sent)
        if sent.cancelled():  # the router stops: the store still says IN_PROGRESS
            self.route.release(self.slot)
            return
        try:
            try:
                answer: UpstreamResponse | UpstreamError = sent.result()
            except UpstreamError as exc:
                answer = exc
            outcome, has_logs = judge(self.job, self.slot, answer, self._t0)
        except Exception:
            self._done(self, mishandled(self.job), [])
            return
        if has_logs:  # rare: the logs are fetched in a task of their own
            self._in_flight.spawn(self._loop, self._with_logs(outcome))
            return
        self._done(self, outcome, [])

    async def _with_logs(self, outcome: Outcome) -> None:
        try:
            logs = await fetch_logs(self.slot, self.job.id, forget=True)
        except asyncio.CancelledError:
            self.route.release(self.slot)  # router stopping: the store still says IN_PROGRESS
            raise
        except Exception:
            self._done(self, mishandled(self.job), [])
            return
        self._done(self, outcome, logs)
