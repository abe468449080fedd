"""Tests for per-app dispatch: slot choice, capacity, waiters, membership and load snapshots."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import yurt
from yurt.backends.base import RunnerEndpoint
from yurt.errors import RequestError
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.pool import ConnectionPool
from yurt.scheduler.policy import AppLoad, RunnerLoad

from support import DEADLINE


class Routed(yurt.App):
    """The App being routed."""

    @yurt.endpoint("/")
    def run(self) -> None:
        return None


BASE = yurt.build_spec(Routed)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ep(runner_id: str, port: int = 1) -> RunnerEndpoint:
    """An endpoint nobody listens on: slots never connect unless a request is sent."""
    return RunnerEndpoint(runner_id, "127.0.0.1", port)


class Harness:
    """An AppRoute with a fake clock and a record of on_demand calls."""

    def __init__(self, max_multiplexing: int = 1, runners: tuple[str, ...] = ()) -> None:
        self.clock = FakeClock()
        self.demand: list[str] = []
        spec = BASE.model_copy(update={"max_multiplexing": max_multiplexing})
        self.route = AppRoute("me/routed", spec, self.demand.append, clock=self.clock)
        if runners:
            self.route.update([ep(r) for r in runners])

    async def waiter(self, timeout: float = 5.0) -> asyncio.Task[Slot]:
        """Start an acquire() and let it register as a waiter."""
        task = asyncio.create_task(self.route.acquire(timeout))
        await asyncio.sleep(0)
        assert not task.done()
        return task


async def settle() -> None:
    """Let woken tasks run (wait_for adds a hop or two, depending on the Python version)."""
    for _ in range(5):
        await asyncio.sleep(0)


def ids(slots: list[Slot | None]) -> list[str | None]:
    """The runner ids of ``slots`` (None stays None)."""
    return [s.runner_id if s is not None else None for s in slots]


# -- choosing a slot ---------------------------------------------------------------------------


def test_least_loaded_runner_is_chosen() -> None:
    """try_acquire picks the runner with the fewest requests in flight."""
    h = Harness(max_multiplexing=3, runners=("a", "b", "c"))
    assert ids([h.route.try_acquire() for _ in range(6)]) == ["a", "b", "c", "a", "b", "c"]
    h.route.release(h.route.slots["b"])
    assert ids([h.route.try_acquire()]) == ["b"]


@pytest.mark.parametrize("max_multiplexing", [1, 2, 4])
def test_never_above_capacity(max_multiplexing: int) -> None:
    """A runner takes at most max_multiplexing requests at once; then nothing is free."""
    h = Harness(max_multiplexing=max_multiplexing, runners=("a",))
    got = [h.route.try_acquire() for _ in range(max_multiplexing + 2)]
    assert ids(got) == ["a"] * max_multiplexing + [None, None]
    assert h.route.slots["a"].in_flight == max_multiplexing


def test_no_runners_no_slot() -> None:
    """With no runners, try_acquire returns None."""
    assert Harness().route.try_acquire() is None


async def test_free_slot_is_immediate_and_signals_no_demand() -> None:
    """acquire() with a free slot returns at once without calling on_demand."""
    h = Harness(runners=("a",))
    slot = await h.route.acquire(timeout=1)
    assert slot.runner_id == "a"
    assert h.demand == []


def test_slot_creates_a_pool_without_connecting() -> None:
    """A new slot holds a ConnectionPool for its runner but opens no connection."""
    h = Harness(runners=("a",))
    slot = h.route.slots["a"]
    assert isinstance(slot.pool, ConnectionPool)
    assert slot.pool.idle_count == 0
    assert slot.endpoint == ep("a")


# -- waiting -----------------------------------------------------------------------------------


async def test_waiter_signals_demand() -> None:
    """A request that has to wait calls on_demand with the app id."""
    h = Harness()
    task = await h.waiter()
    assert h.demand == ["me/routed"]
    h.route.fail_waiters(RequestError("done", status=503, error_type="x"))
    with pytest.raises(RequestError):
        await task


async def test_waiters_get_released_slots_in_fifo_order() -> None:
    """Each release hands the slot to the longest-waiting request first."""
    h = Harness(runners=("a",))
    held = h.route.try_acquire()
    assert held is not None
    tasks = [await h.waiter() for _ in range(3)]
    order: list[int] = []
    for _ in range(3):
        h.route.release(held)
        await settle()
        done = [i for i, t in enumerate(tasks) if t.done() and i not in order]
        assert len(done) == 1
        order += done
        assert tasks[done[0]].result() is held
    assert order == [0, 1, 2]
    assert held.in_flight == 1
    assert h.route.load().waiting == 0


async def test_waiter_gets_slot_from_a_new_runner() -> None:
    """A waiting request takes a slot on a runner that appears through update()."""
    h = Harness()
    task = await h.waiter()
    assert h.route.update([ep("a")]) == []
    slot = await asyncio.wait_for(task, DEADLINE)
    assert slot.runner_id == "a"
    assert (slot.in_flight, slot.idle_since) == (1, None)


async def test_new_runner_serves_waiters_up_to_capacity() -> None:
    """A new runner takes as many waiters as max_multiplexing allows, oldest first."""
    h = Harness(max_multiplexing=2)
    tasks = [await h.waiter() for _ in range(3)]
    h.route.update([ep("a")])
    await settle()
    assert [t.done() for t in tasks] == [True, True, False]
    assert h.route.load().waiting == 1
    h.route.fail_waiters(RequestError("done", status=503, error_type="x"))
    with pytest.raises(RequestError):
        await tasks[2]


async def test_acquire_timeout_is_a_scheduling_failure() -> None:
    """No slot within the timeout: RequestError 503 runner_scheduling_failure, waiter removed."""
    h = Harness()
    with pytest.raises(RequestError) as info:
        await h.route.acquire(timeout=0.01)
    assert (info.value.status, info.value.error_type) == (503, "runner_scheduling_failure")
    assert "me/routed" in info.value.detail
    assert "0.01s" in info.value.detail
    assert h.route.load() == AppLoad()


async def test_timed_out_waiter_is_skipped_on_release() -> None:
    """After a waiter timed out, a release goes to the next waiter, not the dead one."""
    h = Harness(runners=("a",))
    held = h.route.try_acquire()
    assert held is not None
    with pytest.raises(RequestError):
        await h.route.acquire(timeout=0.01)
    task = await h.waiter()
    h.route.release(held)
    assert (await asyncio.wait_for(task, DEADLINE)) is held


async def test_slot_handed_over_at_the_timeout_instant_is_not_leaked() -> None:
    """A slot handed to a waiter as its timeout fires is either returned or given back."""
    h = Harness(runners=("a",))
    held = h.route.try_acquire()
    assert held is not None
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(h.route.acquire(0.05))
    await asyncio.sleep(0)

    def block_past_deadline() -> None:
        # Block the loop past the waiter's deadline, then queue the release so that it runs
        # in the same loop iteration as the timeout, just before it.
        time.sleep(0.1)
        loop.call_at(loop.time() - 1, h.route.release, held)

    loop.call_soon(block_past_deadline)
    try:
        got: Slot | None = await task
    except RequestError:
        got = None
    if got is None:
        assert held.in_flight == 0
        assert h.route.try_acquire() is held
    else:
        assert got is held
        assert held.in_flight == 1
    assert h.route.load().waiting == 0


async def test_cancelled_waiter_is_removed() -> None:
    """Cancelling a waiting acquire() removes it; the next release goes elsewhere."""
    h = Harness(runners=("a",))
    held = h.route.try_acquire()
    assert held is not None
    task = await h.waiter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.route.load().waiting == 0
    h.route.release(held)
    assert held.in_flight == 0


async def test_fail_waiters_propagates_the_error() -> None:
    """fail_waiters fails every waiting request with the given error and counts them."""
    h = Harness()
    tasks = [await h.waiter() for _ in range(2)]
    error = RequestError("runner failed to start", status=503, error_type="startup_timeout")
    assert h.route.fail_waiters(error) == 2
    for task in tasks:
        with pytest.raises(RequestError) as info:
            await task
        assert info.value is error
    assert h.route.load().waiting == 0
    assert h.route.fail_waiters(error) == 0


# -- membership --------------------------------------------------------------------------------


def test_retire_removes_the_slot() -> None:
    """A retired runner is never chosen again, even when it is the only free one."""
    h = Harness(max_multiplexing=2, runners=("a", "b"))
    slot = h.route.retire("a")
    assert slot is not None
    assert slot.retired is True
    assert "a" not in h.route.slots
    assert ids([h.route.try_acquire() for _ in range(3)]) == ["b", "b", None]
    assert h.route.retire("a") is None
    assert h.route.retire("nobody") is None


async def test_release_of_retired_slot_serves_no_waiter() -> None:
    """A request finishing on a retired runner does not hand that runner to a waiter."""
    h = Harness(runners=("a",))
    held = h.route.try_acquire()
    assert held is not None
    task = await h.waiter()
    h.route.retire("a")
    h.route.release(held)
    await settle()
    assert not task.done()
    assert held.in_flight == 0
    h.route.update([ep("b")])
    assert (await asyncio.wait_for(task, DEADLINE)).runner_id == "b"


def test_update_returns_the_slots_that_left() -> None:
    """update() retires runners no longer healthy and those whose address changed."""
    h = Harness(runners=("a", "b", "c"))
    old = dict(h.route.slots)
    gone = h.route.update([ep("a"), ep("c", port=2)])
    assert sorted(ids(list(gone))) == ["b", "c"]
    assert all(s.retired for s in gone)
    assert h.route.slots["a"] is old["a"]
    assert h.route.slots["c"] is not old["c"]
    assert h.route.slots["c"].endpoint.port == 2
    assert sorted(h.route.slots) == ["a", "c"]


# -- load snapshots ----------------------------------------------------------------------------


async def test_load_reports_waiting_and_runners() -> None:
    """load() reports waiters, the oldest wait and each runner's in-flight and idle time."""
    h = Harness(max_multiplexing=2)
    assert h.route.load() == AppLoad()
    h.clock.now = 10.0
    first = await h.waiter()
    h.clock.now = 12.0
    second = await h.waiter()
    assert h.route.load() == AppLoad(waiting=2, oldest_wait_since=10.0)

    h.clock.now = 20.0
    h.route.update([ep("a")])  # takes both waiters
    h.clock.now = 21.0
    h.route.update([ep("a"), ep("b")])
    await asyncio.gather(first, second)
    assert h.route.load() == AppLoad(runners=(RunnerLoad("a", 2, None), RunnerLoad("b", 0, 21.0)))

    h.clock.now = 30.0
    h.route.release(h.route.slots["a"])
    assert h.route.load().runners[0] == RunnerLoad("a", 1, None)
    h.clock.now = 31.0
    h.route.release(h.route.slots["a"])
    assert h.route.load().runners[0] == RunnerLoad("a", 0, 31.0)


async def test_load_counts_only_live_waiters() -> None:
    """A waiter that was cancelled no longer counts, and the oldest wait moves on."""
    h = Harness()
    h.clock.now = 5.0
    first = await h.waiter()
    h.clock.now = 6.0
    second = await h.waiter()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert h.route.load() == AppLoad(waiting=1, oldest_wait_since=6.0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second


def test_route_exposes_paths_and_capacity() -> None:
    """The route knows the app's endpoint paths and its per-runner capacity."""
    h: Any = Harness(max_multiplexing=3)
    assert (h.route.paths, h.route.capacity) == (frozenset({"/"}), 3)


def test_retired_runner_stays_out_while_discovery_still_lists_it() -> None:
    """A retired runner is not routed again by later updates that still list it healthy."""
    h = Harness(runners=("a", "b"))
    h.route.retire("a")
    h.route.update([ep("a"), ep("b"), ep("c")])  # another runner came up; "a" still passes
    h.route.update([ep("b"), ep("c")])
    h.route.update([ep("a"), ep("b"), ep("c")])  # listed again: still kept out
    assert sorted(h.route.slots) == ["b", "c"] and h.route.retired == {"a"}


def test_reinstated_runner_comes_back() -> None:
    """A runner whose stop did not happen is routed to again at the next update."""
    h = Harness(runners=("a",))
    h.route.retire("a")
    h.route.update([ep("a")])
    assert h.route.slots == {}
    h.route.reinstate("a")
    h.route.update([ep("a")])
    assert list(h.route.slots) == ["a"]


class NothingSuits:
    """A backlog that has requests, none of which any slot suits (e.g. all avoid it)."""

    def __init__(self) -> None:
        self.offers = 0

    def pending(self) -> tuple[int, float | None]:
        return 1, 0.0

    def offer(self, slot: Slot) -> bool:
        self.offers += 1
        return False

    def __len__(self) -> int:
        return 1


def test_a_slot_offered_to_the_queue_in_vain_keeps_its_idle_clock() -> None:
    """Queue traffic that a runner does not serve must not reset its idle time (keep_alive)."""
    h = Harness(runners=("a",))
    h.route.backlog = NothingSuits()
    since = h.route.slots["a"].idle_since
    h.clock.now += 50
    h.route.serve_backlog()
    assert h.route.backlog.offers == 1
    slot = h.route.slots["a"]
    assert (slot.idle_since, slot.in_flight) == (since, 0)
