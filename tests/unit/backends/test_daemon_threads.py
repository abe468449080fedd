"""``DaemonThreads``: calls run, at most ``limit`` at once, and never hold up interpreter exit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from yurt.backends.nomad.threads import DaemonThreads


def test_results_exceptions_and_the_limit() -> None:
    """A call's result and exception come back; no more than ``limit`` run together."""
    pool = DaemonThreads(2, "t")
    running, peak, lock = 0, 0, threading.Lock()

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        if n < 0:
            raise ValueError(n)
        return n * 2

    futures = [pool.submit(work, n) for n in range(6)]
    assert [f.result(timeout=30) for f in futures] == [0, 2, 4, 6, 8, 10]
    assert peak == 2
    with pytest.raises(ValueError):
        pool.submit(work, -1).result(timeout=30)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(work, 1)


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
