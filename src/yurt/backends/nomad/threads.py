"""An executor whose threads never keep the process alive.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, and a
Nomad blocking query holds its thread until Nomad answers (up to ``blocking_wait``, a minute by
default): a stopped ``yurt server`` would linger that long after Ctrl-C. Here each call runs on
a daemon thread of its own, at most ``limit`` at a time, and nothing waits for them at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DaemonThreads(Executor):
    """Runs each call on a daemon thread, at most ``limit`` at once."""

    def __init__(self, limit: int, name: str) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._name = name
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Start ``fn`` on a thread of its own (it waits there for a free slot)."""
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        future: Future[T] = Future()

        def run() -> None:
            with self._slots:
                if not future.set_running_or_notify_cancel():
                    return  # cancelled while it waited for a slot
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)

        threading.Thread(target=run, name=self._name, daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; calls in flight finish on their own (nothing waits for them)."""
        self._closed = True
