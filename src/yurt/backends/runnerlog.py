"""A local runner's output: read from its pipe, appended to its log file, shown on the console.

The runner writes to a pipe, never to a file of its own. A process whose stdout is a file on a
full disk gets ``ENOSPC`` from its next ``print()`` or log line, which kills a runner during
startup and fails user code that prints; a pipe never fills a disk. Here the file write may fail:
the lines are then dropped and counted, writes resume once the disk has room again, and a note in
the file says how many were lost. The console copy (``yurt run``) and the runner never wait on it.

The last ``TAIL_BYTES`` of output stay in memory, so that why a runner failed (its last stderr
line, ``FAILURE_MARK``) is known even when the file could not be written.

The console is written by a thread of its own (:class:`Console`), never by the event loop the
router shares: a terminal paused or a pipe no one reads costs console lines, not requests.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO, Protocol

import structlog

from yurt.runner.contract import parse_failure

log = structlog.get_logger("yurt.local")

TAIL_BYTES = 16 * 1024
CHUNK = 64 * 1024
# A line longer than this reaches the console in pieces, each with the prefix.
MAX_CONSOLE_LINE = 16 * 1024


def failure_from_tail(tail: bytes, returncode: int | None) -> tuple[str, str]:
    """(error kind, message) from the runner's last failure line in ``tail``, else generic."""
    found = parse_failure(tail.decode(errors="replace"))
    if found is not None:
        return found
    return "exited", f"runner exited with code {returncode} before it became ready"


class Sink(Protocol):
    """Where console lines go: a :class:`Console`, or in tests any binary stream."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class Console:
    """A stream shown runner output, written by a thread of its own so no writer waits on it.

    ``write`` only queues: while the stream does not drain (a paused terminal, ``yurt run |
    slow-reader``, a parent that never reads the pipe) up to ``max_pending`` writes wait, and
    what comes beyond them is dropped and counted in ``dropped_lines``. A stream that fails is
    given up. ``close`` shows what is queued, within a bound.
    """

    def __init__(self, stream: BinaryIO, max_pending: int = 1024) -> None:
        self.stream = stream
        self.dropped_lines = 0
        self._pending: queue.Queue[bytes | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._drain, name="yurt-console", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        """Queue ``data`` for the stream; never blocks."""
        try:
            self._pending.put_nowait(data)
        except queue.Full:
            self.dropped_lines += data.count(b"\n")
        return len(data)

    def flush(self) -> None:
        """Nothing to do here: the thread flushes after each write."""

    def close(self, timeout: float = 2.0) -> None:
        """Let the thread show what is queued, waiting at most ``timeout`` seconds."""
        try:
            self._pending.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _drain(self) -> None:
        broken = False
        while (data := self._pending.get()) is not None:
            if broken:
                continue
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                broken = True  # a closed or broken terminal: what follows is dropped


class RunnerOutput:
    """Where one runner's output goes: its log file, the console (optional) and a tail."""

    def __init__(
        self, runner_id: str, path: Path, console: Sink | None, *, app_id: str = ""
    ) -> None:
        self.runner_id = runner_id
        self.app_id = app_id
        self.path = path
        self.console = console
        self.dropped_lines = 0  # lines the log file lost in all (a full disk, say)
        self.dropped_bytes = 0
        self._owed = (0, 0)  # (lines, bytes) lost since the file was last written
        self._prefix = f"[{runner_id}] ".encode()
        self._partial = b""  # the console's unfinished last line
        self._tail = bytearray()
        self._fd: int | None = None
        self._failing = False  # the last file write failed: one warning per outage

    @property
    def tail(self) -> bytes:
        """The last ``TAIL_BYTES`` of output."""
        return bytes(self._tail)

    def failure(self, returncode: int | None) -> tuple[str, str]:
        """(error kind, message) of a runner that ended before it became ready."""
        return failure_from_tail(self.tail, returncode)

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Copy ``stream`` until its end (the runner and whatever inherited it have exited)."""
        try:
            while chunk := await stream.read(CHUNK):
                self.feed(chunk)
        finally:
            self.close()

    def feed(self, chunk: bytes) -> None:
        """Take one piece of output: to the file, the console and the tail."""
        self._tail += chunk
        if len(self._tail) > TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]
        self._to_file(chunk)
        if self.console is not None:
            self._to_console(chunk)

    def close(self) -> None:
        """Show an unfinished last line, close the file."""
        if self.console is not None and self._partial:
            self._to_console(b"\n")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _to_file(self, chunk: bytes) -> None:
        data = chunk
        if self._owed != (0, 0):
            note = (
                f"[yurt] {self._owed[0]} lines ({self._owed[1]} bytes) of this runner's "
                "output could not be written here\n"
            ).encode()
            data = note + chunk
        try:
            if self._fd is None:
                # Opened on first output, not at spawn: a disk with no room for a new file
                # must not keep the runner from starting. 0600: runner output is private.
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            # ``data`` is what is left: a note not written is said again with the next one.
            lost = data[len(data) - len(chunk) :] if len(data) > len(chunk) else data
            lines = lost.count(b"\n")
            self.dropped_lines += lines
            self.dropped_bytes += len(lost)
            self._owed = (self._owed[0] + lines, self._owed[1] + len(lost))
            if not self._failing:
                self._failing = True
                log.warning(
                    "runner_log_write_failed",
                    app=self.app_id or None,
                    runner=self.runner_id,
                    log=str(self.path),
                    error=str(exc),
                )
            return
        if self._failing:
            log.warning(
                "runner_log_resumed",
                app=self.app_id or None,
                runner=self.runner_id,
                log=str(self.path),
                dropped_lines=self._owed[0],
                dropped_bytes=self._owed[1],
            )
        self._failing = False
        self._owed = (0, 0)

    def _to_console(self, chunk: bytes) -> None:
        assert self.console is not None
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_CONSOLE_LINE:
            lines.append(self._partial[:MAX_CONSOLE_LINE])
            self._partial = self._partial[MAX_CONSOLE_LINE:]
        if not lines:
            return
        out = b"".join(self._prefix + line + b"\n" for line in lines)
        try:
            self.console.write(out)
            self.console.flush()
        except (OSError, ValueError):
            # A closed or broken terminal: the runner and its log file go on without it.
            self.console = None
