"""An executor whose threads never keep the process alive.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, and a
Nomad blocking query holds its thread until Nomad answers (up to ``blocking_wait``, a minute by
default): a stopped ``yurt server`` would linger that long after Ctrl-C. Here each call runs on
a daemon thread of its own, at most ``limit`` at a time (or without a limit), and nothing waits
for them at exit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class PoolClosed(RuntimeError):
    """A call was submitted after ``shutdown`` (the ``RuntimeError`` executors raise)."""


class DaemonThreads(Executor):
    """Runs each call on a daemon thread, at most ``limit`` at once (``None``: no limit)."""

    def __init__(self, limit: int | None, name: str) -> None:
        self._slots: threading.BoundedSemaphore | None = (
            None if limit is None else threading.BoundedSemaphore(limit)
        )
        self._name = name
        self._closed = False
        self._lock = threading.Lock()
        self._waiting: set[Future[Any]] = set()  # submitted, not started yet

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Start ``fn`` on a thread of its own (it waits there for a free slot)."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise PoolClosed("cannot schedule new calls after shutdown")
            self._waiting.add(future)

        def run() -> None:
            with self._slots if self._slots is not None else contextlib.nullcontext():
                with self._lock:
                    self._waiting.discard(future)
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
        """Take no more calls; with ``cancel_futures``, cancel those still waiting for a slot.

        Calls already running finish on their own: nothing waits for them, whatever ``wait``
        says, since a blocking query may run for minutes and the threads are daemons.
        """
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, set()
        if cancel_futures:
            for future in waiting:
                future.cancel()
