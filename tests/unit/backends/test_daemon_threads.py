"""``DaemonThreads``: calls run, at most ``limit`` at once, and never hold up interpreter exit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import pytest

from yurt.backends.nomad.threads import DaemonThreads, PoolClosed


def test_results_and_exceptions() -> None:
    """A call's result and exception come back; after shutdown, submit raises."""
    pool = DaemonThreads(2, "t")

    def work(n: int) -> int:
        if n < 0:
            raise ValueError(n)
        return n * 2

    futures = [pool.submit(work, n) for n in range(6)]
    assert [f.result(timeout=30) for f in futures] == [0, 2, 4, 6, 8, 10]
    with pytest.raises(ValueError):
        pool.submit(work, -1).result(timeout=30)
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(work, 1)
    assert issubclass(PoolClosed, RuntimeError)  # what every Executor raises there


def test_no_more_than_limit_run_together() -> None:
    """With two calls holding both slots, a third waits until one of them ends."""
    pool = DaemonThreads(2, "t")
    release = threading.Event()
    started = [threading.Event() for _ in range(3)]

    def hold(n: int) -> int:
        started[n].set()
        assert release.wait(30)
        return n

    first, second = pool.submit(hold, 0), pool.submit(hold, 1)
    assert started[0].wait(30) and started[1].wait(30)
    third = pool.submit(hold, 2)
    # The third thread exists and waits for a slot; it must not get one while both are held.
    assert not started[2].wait(0.2)
    assert not third.running()
    release.set()
    assert [f.result(timeout=30) for f in (first, second, third)] == [0, 1, 2]


def test_no_limit() -> None:
    """Without a limit every call runs at once."""
    pool = DaemonThreads(None, "t")
    barrier = threading.Barrier(8, timeout=30)
    futures = [pool.submit(barrier.wait) for _ in range(8)]
    assert sorted(f.result(timeout=30) for f in futures) == list(range(8))


def test_shutdown_cancels_calls_waiting_for_a_slot() -> None:
    """shutdown(cancel_futures=True) cancels queued calls; the running one still finishes."""
    pool = DaemonThreads(1, "t")
    release, began = threading.Event(), threading.Event()
    ran: list[int] = []

    def hold(n: int) -> int:
        began.set()
        ran.append(n)
        assert release.wait(30)
        return n

    running = pool.submit(hold, 0)
    assert began.wait(30)
    queued = pool.submit(hold, 1)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(CancelledError):
        queued.result(timeout=0)
    release.set()
    assert running.result(timeout=30) == 0
    time.sleep(0.05)  # give the queued thread its slot: it must see the cancel and not run
    assert ran == [0]


def test_shutdown_without_cancel_lets_queued_calls_run() -> None:
    """A plain shutdown refuses new calls but runs the ones already queued."""
    pool = DaemonThreads(1, "t")
    release = threading.Event()
    first = pool.submit(release.wait, 30)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False)
    release.set()
    assert first.result(timeout=30) is True
    assert queued.result(timeout=30) == "ran"


def test_a_blocked_call_does_not_hold_up_exit() -> None:
    """A process whose call blocks for a minute exits at once when its main code ends."""
    code = (
        "import time; from yurt.backends.nomad.threads import DaemonThreads; "
        "DaemonThreads(1, 't').submit(time.sleep, 60); print('done')"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.stdout.strip() == "done"
    assert time.monotonic() - started < 40  # not the 60 s the call blocks for
