"""Per-app dispatch: the routable runners, their load, and requests waiting for a free slot."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from yurt.backends.base import RunnerEndpoint
from yurt.errors import RequestError
from yurt.router.pool import ConnectionPool
from yurt.scheduler.policy import AppLoad, RunnerLoad
from yurt.spec import AppSpec


class NoSlotInTime(RequestError):
    """No runner had a free slot within the time a request may wait for one."""


class Slot:
    """One routable runner: where it is, its connection pool, and what it is doing."""

    __slots__ = ("endpoint", "gpus", "hints", "idle_since", "in_flight", "pool", "retired")

    def __init__(self, endpoint: RunnerEndpoint, now: float) -> None:
        self.endpoint = endpoint
        self.pool = ConnectionPool(endpoint.host, endpoint.port, token=endpoint.token)
        self.in_flight = 0
        self.idle_since: float | None = now
        self.retired = False
        self.hints: frozenset[str] = frozenset()  # what the runner's provide_hints() said last
        self.gpus: tuple[tuple[str, str], ...] = ()  # (name, uuid) of each GPU it reported

    @property
    def runner_id(self) -> str:
        """The runner's id."""
        return self.endpoint.runner_id


class Backlog(Protocol):
    """Requests queued for an app (the durable queue), served whenever a slot is free."""

    def pending(self) -> tuple[int, float | None]:
        """How many wait, and since when (monotonic) the oldest waits."""
        ...

    def offer(self, slot: Slot) -> bool:
        """Start the best queued request on ``slot`` (already taken for it); False: none suits."""
        ...

    def __len__(self) -> int:
        """How many requests wait (0: nothing to offer, which is asked first)."""
        ...


class AppRoute:
    """Routes one app's requests to the least-loaded runner with a free slot."""

    def __init__(
        self,
        app_id: str,
        spec: AppSpec,
        on_demand: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self.spec = spec
        self.paths = spec.paths
        self.capacity = spec.max_multiplexing
        self.slots: dict[str, Slot] = {}
        self.retired: set[str] = set()  # runner ids kept out of routing while still listed
        self._waiters: collections.deque[tuple[float, asyncio.Future[Slot]]] = collections.deque()
        self._on_demand = on_demand
        self._clock = clock
        self.backlog: Backlog | None = None

    # -- taking and giving back slots ------------------------------------------------------

    def try_acquire(self) -> Slot | None:
        """The least-loaded runner with a free slot, now, or None."""
        best: Slot | None = None
        for slot in self.slots.values():
            if (
                slot.in_flight < self.capacity
                and not slot.retired
                and (best is None or slot.in_flight < best.in_flight)
            ):
                best = slot
        if best is not None:  # ``_take``, written out
            best.in_flight += 1
            best.idle_since = None
        return best

    def try_acquire_unwaited(self) -> Slot | None:
        """As ``try_acquire``, but None while direct callers wait: they come first."""
        return None if self._waiters else self.try_acquire()

    async def acquire(self, timeout: float) -> Slot:
        """A slot, waiting up to ``timeout`` for one (and signalling demand meanwhile)."""
        if (slot := self.try_acquire_unwaited()) is not None:
            return slot
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        entry = (self._clock(), fut)
        self._waiters.append(entry)
        self._on_demand(self.app_id)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            # Python >= 3.12 raises TimeoutError even when the slot was handed over in the
            # same loop iteration as the timeout: give it back, or it stays taken forever.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise NoSlotInTime(
                f"no runner of {self.app_id} became free within {timeout:g}s",
                status=503,
                error_type="runner_scheduling_failure",
            ) from None
        except BaseException:
            # Handed a slot in the same instant as the timeout or a cancellation: give it back.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise
        finally:
            self._remove_waiter(entry)

    def release(self, slot: Slot) -> None:
        """A request on ``slot`` finished; hand the slot to the next waiter, if any."""
        slot.in_flight -= 1
        if slot.retired:
            return
        if slot.in_flight == 0:
            slot.idle_since = self._clock()
        backlog = self.backlog
        if self._waiters or (backlog is not None and len(backlog)):  # else nothing to hand
            self._hand_over(slot)

    def _take(self, slot: Slot) -> None:
        slot.in_flight += 1
        slot.idle_since = None

    def _hand_over(self, slot: Slot) -> None:
        # Direct callers hold a connection open: they go before the durable queue.
        while self._waiters and slot.in_flight < self.capacity and not slot.retired:
            _, fut = self._waiters.popleft()
            if not fut.done():
                self._take(slot)
                fut.set_result(slot)
        backlog = self.backlog
        if backlog is None or not len(backlog):  # most releases: an empty queue, nothing to try
            return
        while slot.in_flight < self.capacity and not slot.retired:
            # Taken on trial (the backlog starts its request on a taken slot); a slot that got
            # nothing keeps its idle clock, or queue traffic would keep idle runners alive.
            idle_since = slot.idle_since
            self._take(slot)
            if not backlog.offer(slot):
                slot.in_flight -= 1
                slot.idle_since = idle_since
                break

    def serve_backlog(self) -> bool:
        """Offer free slots, least loaded first, to the queue; False if it still waits."""
        for slot in sorted(self.slots.values(), key=lambda s: s.in_flight):
            self._hand_over(slot)
        if self.backlog is not None and self.backlog.pending()[0]:
            self._on_demand(self.app_id)
            return False
        return True

    def _remove_waiter(self, entry: tuple[float, asyncio.Future[Slot]]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(entry)

    # -- membership ------------------------------------------------------------------------

    def update(self, endpoints: Iterable[RunnerEndpoint]) -> list[Slot]:
        """Match the slots to the healthy set; returns the slots that left (to be closed)."""
        now = self._clock()
        seen = {e.runner_id: e for e in endpoints}
        gone = [s for rid, s in self.slots.items() if rid not in seen or seen[rid] != s.endpoint]
        for slot in gone:
            slot.retired = True
            del self.slots[slot.runner_id]
        for rid, endpoint in seen.items():
            if rid not in self.slots and rid not in self.retired:
                self.slots[rid] = Slot(endpoint, now)
        for slot in list(self.slots.values()):
            self._hand_over(slot)
        return gone

    def retire(self, runner_id: str) -> Slot | None:
        """Route nothing more to this runner; returns its slot if it was routable.

        It stays out of routing even while discovery lists it healthy (a runner being stopped
        on a cluster passes its checks until its service is deregistered); the router forgets
        it once the backend no longer has it.
        """
        self.retired.add(runner_id)
        slot = self.slots.pop(runner_id, None)
        if slot is not None:
            slot.retired = True
        return slot

    def reinstate(self, runner_id: str) -> None:
        """Let a retired runner back in at the next ``update`` (its stop did not happen)."""
        self.retired.discard(runner_id)

    def fail_waiters(self, error: RequestError) -> int:
        """Fail every waiting request with ``error`` (their runner could not start)."""
        failed = 0
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(error)
                failed += 1
        return failed

    def load(self) -> AppLoad:
        """A snapshot for the scheduler."""
        waiters = [since for since, fut in self._waiters if not fut.done()]
        waiting, oldest = len(waiters), waiters[0] if waiters else None
        if self.backlog is not None:
            queued, since = self.backlog.pending()
            waiting += queued
            if since is not None and (oldest is None or since < oldest):
                oldest = since
        return AppLoad(
            waiting=waiting,
            oldest_wait_since=oldest,
            runners=tuple(
                RunnerLoad(s.runner_id, s.in_flight, s.idle_since) for s in self.slots.values()
            ),
        )
