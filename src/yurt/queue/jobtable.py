"""The queue's unfinished requests in memory, and everything each of them holds until it completes.

A request holds its body's bytes (counted per app, against ``QueueConfig.max_queued_bytes``),
its key's share of a quota, at most one timer (its start deadline while it first waits, or its
backoff while a retry waits its turn), the logs of its earlier attempts, and the future of
whoever waits for its next change. ``JobTable.add`` takes them and ``JobTable.finish`` lets
every one go, so that nothing outlives the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from yurt.queue.model import Job, State
from yurt.quota import Quotas

LogEntries = list[dict[str, Any]]


class JobTable:
    """Unfinished requests by id, with their timers, held bytes, logs and waiters."""

    def __init__(self, quotas: Quotas | None = None) -> None:
        # Per-key counts of unfinished requests (router/gate.py): a request counts until it
        # completes, across restarts.
        self.quotas = quotas if quotas is not None and quotas.active else None
        self._jobs: dict[str, Job] = {}
        self._held: dict[str, int] = {}  # bodies of unfinished requests, per app
        self._logs: dict[str, LogEntries] = {}  # earlier attempts' logs
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._backoffs: dict[str, asyncio.TimerHandle] = {}  # retries waiting their turn
        self._changed: dict[str, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (looked up once: each lookup costs a system call)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- the requests --------------------------------------------------------------------------

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, request_id: str) -> Job | None:
        """The unfinished request ``request_id``, if it is one."""
        return self._jobs.get(request_id)

    def running(self, app_id: str) -> int:
        """How many of the app's requests are in progress."""
        return sum(
            1
            for job in self._jobs.values()
            if job.app_id == app_id and job.state is State.IN_PROGRESS
        )

    def add(self, job: Job, *, taken_back: bool = False) -> None:
        """Hold ``job`` until it finishes: its body's bytes, and its key's quota share.

        A new request's share was taken when the gate admitted it; one ``taken_back`` after a
        restart takes its share here.
        """
        self._jobs[job.id] = job
        if taken_back and self.quotas is not None and job.owner is not None:
            self.quotas.hold(job.owner)
        self._held[job.app_id] = self._held.get(job.app_id, 0) + len(job.body)

    def held(self, app_id: str) -> int:
        """Bytes of the bodies of the app's unfinished requests."""
        return self._held.get(app_id, 0)

    @property
    def holding(self) -> frozenset[str]:
        """The apps ``held`` counts bytes for: none is left once its last request finished."""
        return frozenset(self._held)

    def finish(self, job: Job) -> LogEntries:
        """Let go of everything ``job`` holds (its body too); returns its earlier attempts' logs."""
        self.drop_timers(job.id)
        if self._jobs.pop(job.id, None) is not None and self.quotas is not None and job.owner:
            self.quotas.release(job.owner)
        held = self._held.get(job.app_id, 0) - len(job.body)
        if held:
            self._held[job.app_id] = held
        else:  # the app's last unfinished request: nothing of an undeployed app stays behind
            self._held.pop(job.app_id, None)
        job.body = b""  # no longer counted as held: nothing may keep it alive now
        return self._logs.pop(job.id, [])

    # -- logs of earlier attempts ------------------------------------------------------------

    def load_logs(self, logs: Mapping[str, LogEntries]) -> None:
        """Take the logs a previous router kept of unfinished requests' attempts."""
        self._logs.update(logs)

    def add_logs(self, request_id: str, logs: LogEntries) -> None:
        """Keep an attempt's logs until the request completes."""
        if logs:
            self._logs.setdefault(request_id, []).extend(logs)

    def logs(self, request_id: str) -> LogEntries:
        """A copy of the logs of the request's earlier attempts."""
        return list(self._logs.get(request_id, []))

    # -- timers --------------------------------------------------------------------------------

    def arm_deadline(self, job: Job, delay: float, expire: Callable[[Job], None]) -> None:
        """Call ``expire(job)`` in ``delay`` seconds unless the job starts or finishes first."""
        self._deadlines[job.id] = self.loop.call_later(delay, self._deadline_due, job, expire)

    def _deadline_due(self, job: Job, expire: Callable[[Job], None]) -> None:
        self._deadlines.pop(job.id, None)
        expire(job)

    def arm_backoff(self, job: Job, delay: float, due: Callable[[Job], None]) -> None:
        """Call ``due(job)`` in ``delay`` seconds unless the job starts or finishes first."""
        self._backoffs[job.id] = self.loop.call_later(delay, self._backoff_due, job, due)

    def _backoff_due(self, job: Job, due: Callable[[Job], None]) -> None:
        self._backoffs.pop(job.id, None)
        due(job)

    def drop_timers(self, request_id: str) -> None:
        """Cancel the request's start deadline and retry backoff, if armed."""
        if not (self._deadlines or self._backoffs):
            return  # the common case: nothing armed for anyone
        for timers in (self._deadlines, self._backoffs):
            handle = timers.pop(request_id, None)
            if handle is not None:
                handle.cancel()

    def cancel_timers(self) -> None:
        """Cancel every timer (the router stops): what they wait for happens after a restart."""
        for timers in (self._deadlines, self._backoffs):
            for handle in timers.values():
                handle.cancel()

    # -- waiters -------------------------------------------------------------------------------

    def waiter(self, request_id: str) -> asyncio.Future[None]:
        """A future done at the next change of ``request_id`` (at once if it is not unfinished)."""
        fut = self._changed.get(request_id)
        if fut is None:
            fut = self.loop.create_future()
            if request_id in self._jobs:
                self._changed[request_id] = fut
            else:
                fut.set_result(None)  # completed (or unknown): nothing more will change
        return fut

    def notify(self, request_id: str) -> None:
        """The request changed: wake whoever waits for it."""
        fut = self._changed.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def wake_all(self) -> None:
        """Wake every waiter (the router stops)."""
        changed, self._changed = self._changed, {}
        for fut in changed.values():
            if not fut.done():
                fut.set_result(None)

    @property
    def watched(self) -> int:
        """How many requests someone waits on."""
        return len(self._changed)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())
