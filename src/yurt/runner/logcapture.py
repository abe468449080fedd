"""Per-request capture of what user code prints and logs, teed to the runner's own output.

``install()`` (once, at runner start) wraps ``sys.stdout``/``sys.stderr`` and the stdlib
logging record factory. Both record only while a ``LogBuffer`` is current in the calling
context, which ``capturing()`` sets around a user call; everything still goes where it went
before. The runner's structlog output is not captured: its logger was bound to the original
stderr before ``install()`` ran, and it logs outside ``capturing()`` anyway.

Limits per request: ``MAX_ENTRIES`` entries and ``MAX_CHARS`` characters in all; a message
longer than ``MAX_MESSAGE`` characters is cut with a note saying how much was cut. Past either
request limit one last entry (``source: "yurt"``) says so and later output is not captured (it
still reaches the runner's log). Not captured: threads the user starts themselves (they do not
inherit the context), writes to ``sys.stdout.buffer``, and writes by logging's own stream
handlers (the record is captured once, as a log entry).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, TypedDict, cast

MAX_ENTRIES = 1000
MAX_MESSAGE = 64 * 1024
MAX_CHARS = 1024 * 1024

Stream = Literal["STDOUT", "STDERR"]


class LogEntry(TypedDict):
    """One captured line or log record, as ``GET /_yurt/requests/{id}/logs`` returns it."""

    timestamp: str  # ISO 8601, UTC, milliseconds: "2025-01-31T12:00:00.123+00:00"
    level: str  # "STDOUT" / "STDERR" for prints, the record's level name for logging
    source: Literal["user", "yurt"]
    message: str
    labels: dict[str, str]  # fal's: ``fal_request_id`` and ``fal_endpoint`` of the request


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return message[:MAX_MESSAGE] + f" [... {len(message) - MAX_MESSAGE} characters cut]"


class LogBuffer:
    """What one request printed and logged. Thread-safe: sync endpoints write from a worker."""

    def __init__(self, request_id: str = "", endpoint: str = "") -> None:
        # fal labels each line of a request with these (fal-client's callers read them).
        self._labels = {"fal_request_id": request_id} if request_id else {}
        if endpoint:
            self._labels["fal_endpoint"] = endpoint
        self._lock = threading.Lock()
        self._entries: list[LogEntry] = []
        self._partial: dict[Stream, list[str]] = {"STDOUT": [], "STDERR": []}
        self._partial_len: dict[Stream, int] = {"STDOUT": 0, "STDERR": 0}
        self.count = 0  # entries recorded, including ones already drained
        self._chars = 0  # characters recorded, for MAX_CHARS
        self._full = False

    @property
    def held_chars(self) -> int:
        """Characters of the entries still held (not drained)."""
        with self._lock:
            return sum(len(e["message"]) for e in self._entries)

    def add(self, level: str, message: str, created: float | None = None) -> None:
        """Record one entry from user code."""
        with self._lock:
            self._add(level, message, created)

    def write(self, stream: Stream, text: str) -> None:
        """Record printed text: one entry per complete line, partial lines kept until closed."""
        with self._lock:
            parts = text.split("\n")
            for complete in parts[:-1]:
                self._append_partial(stream, complete)
                self._add(stream, "".join(self._partial[stream]), None)
                self._partial[stream], self._partial_len[stream] = [], 0
            self._append_partial(stream, parts[-1])

    def close(self) -> None:
        """Record partial lines left over at the end of the request."""
        with self._lock:
            for stream, pieces in self._partial.items():
                if pieces:
                    self._add(stream, "".join(pieces), None)
                    self._partial[stream], self._partial_len[stream] = [], 0

    def snapshot(self) -> list[LogEntry]:
        """The entries held so far."""
        with self._lock:
            return list(self._entries)

    def drain(self) -> list[LogEntry]:
        """The entries held so far, forgetting them; later ones are still recorded."""
        with self._lock:
            entries, self._entries = self._entries, []
            return entries

    def _append_partial(self, stream: Stream, piece: str) -> None:
        # Keep one character past the cut so that _cut() still notes that something was cut.
        room = MAX_MESSAGE + 1 - self._partial_len[stream]
        if piece and room > 0:
            piece = piece[:room]
            self._partial[stream].append(piece)
            self._partial_len[stream] += len(piece)

    def _add(self, level: str, message: str, created: float | None) -> None:
        if self._full:
            return
        message = _cut(message)
        stamp = _timestamp(time.time() if created is None else created)
        if self.count >= MAX_ENTRIES or self._chars + len(message) > MAX_CHARS:
            self._full = True
            message = (
                f"this request's output passed the capture limit ({MAX_ENTRIES} entries or "
                f"{MAX_CHARS} characters); later output is only in the runner's log"
            )
            level = "WARNING"
            source: Literal["user", "yurt"] = "yurt"
        else:
            source = "user"
            self._chars += len(message)
        self._entries.append(
            {
                "timestamp": stamp,
                "level": level,
                "source": source,
                "message": message,
                "labels": dict(self._labels),
            }
        )
        self.count += 1


_current: contextvars.ContextVar[LogBuffer | None] = contextvars.ContextVar(
    "yurt_log_capture", default=None
)


class capturing:
    """Within this block (and threads it hands its context to), output goes to ``buffer``.

    A class, not a generator-based context manager: it is entered on every request."""

    __slots__ = ("_buffer", "_token")

    def __init__(self, buffer: LogBuffer) -> None:
        self._buffer = buffer

    def __enter__(self) -> None:
        self._token = _current.set(self._buffer)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
        self._buffer.close()


class Tee:
    """A text stream that writes through to ``stream`` and records into the current buffer.

    A write ``stream`` refuses (a full disk, a pipe whose reader is gone) is dropped and
    counted in ``dropped_lines``, not raised: user code that prints must not fail for it.
    """

    def __init__(self, stream: TextIO, name: Stream) -> None:
        self.stream = stream
        self.name: Stream = name
        self.dropped_lines = 0

    def write(self, text: str) -> int:
        try:
            written = self.stream.write(text)
        except OSError:
            self.dropped_lines += text.count("\n")
            written = len(text)
        buffer = _current.get()
        # logging's StreamHandler (and its lastResort) write records here; the record factory
        # already captured them as log entries, so a second copy as a print is skipped.
        if buffer is not None and sys._getframe(1).f_globals.get("__name__") != "logging":
            buffer.write(self.name, text)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with contextlib.suppress(OSError):  # counted by write()
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _render(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:
        message = str(record.msg)
    if record.exc_info and record.exc_info[0] is not None:
        message += "\n" + logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        message += "\n" + record.stack_info
    return message


def _capturing_factory(
    previous: Callable[..., logging.LogRecord], level: int
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        buffer = _current.get()
        if buffer is not None and record.levelno >= level:
            buffer.add(record.levelname, _render(record), record.created)
        return record

    factory.yurt_capturing = True  # type: ignore[attr-defined]
    return factory


def install(level: int = logging.INFO) -> None:
    """Start teeing stdout/stderr and capturing log records of ``level`` and above. Idempotent.

    The records are taken where they are made (the record factory), not by a root handler:
    a handler on the root logger would turn the user's ``logging.basicConfig()`` into a no-op
    and silence logging's lastResort output to stderr. The root logger is lowered to ``level``
    if it was above it, so that INFO records are made at all; with no handlers configured
    that changes nothing in the runner's log (lastResort still shows WARNING and above).
    """
    if sys.stdout is not None and not isinstance(sys.stdout, Tee):
        sys.stdout = cast(TextIO, Tee(sys.stdout, "STDOUT"))
    if sys.stderr is not None and not isinstance(sys.stderr, Tee):
        sys.stderr = cast(TextIO, Tee(sys.stderr, "STDERR"))
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "yurt_capturing", False):
        logging.setLogRecordFactory(_capturing_factory(previous, level))
    root = logging.getLogger()
    if root.level > level:
        root.setLevel(level)
