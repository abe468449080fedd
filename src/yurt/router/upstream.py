"""What the router's connection pool hands back: a response, its streamed body, an error.

A response is buffered whole, or, when the caller allows it and the upstream streams (chunked
transfer-encoding, or ``text/event-stream``), handed over as soon as its head arrives, with a
``BodyStream`` that yields the body chunk by chunk. A failure is an :class:`UpstreamError` whose
``kind`` lets the caller decide whether to send again (the pool never does).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from yurt.router.connection import UpstreamConnection

__all__ = ["BodyStream", "Receiver", "UpstreamError", "UpstreamErrorKind", "UpstreamResponse"]

UpstreamErrorKind = Literal["connect_refused", "connect_error", "disconnected", "timeout"]


class UpstreamError(Exception):
    """The upstream failed before a complete response arrived."""

    kind: UpstreamErrorKind

    def __init__(self, kind: UpstreamErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BodyStream:
    """The body of a streamed response, chunk by chunk as the upstream sends it.

    ``next`` returns the next chunk, ``None`` once the body is complete, or raises the
    ``UpstreamError`` that cut it (the request's deadline covers the whole body). A reader that
    stops early calls ``abandon``, which closes the connection: the upstream sees its caller go.
    """

    __slots__ = ("_chunks", "_conn", "_ended", "_first", "_paused", "_waiter")

    # Past this many unread chunks the connection stops reading until the reader catches up.
    HIGH_WATER = 64

    def __init__(self, conn: UpstreamConnection) -> None:
        self._conn = conn
        # A deque and one waiter, not an asyncio.Queue: one reader, and a chunk costs less.
        self._chunks: collections.deque[bytes | UpstreamError | None] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._paused = False
        self._first: Callable[[], None] | None = None

    def on_first(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called once the stream has its first item (a chunk, its end, or
        its error), from the connection's callbacks: it must not write to the connection."""
        if self._chunks:
            callback()
        else:
            self._first = callback

    def feed(self, item: bytes | UpstreamError | None) -> None:
        """From the connection: a chunk, the end (``None``), or the error that cut it."""
        self._chunks.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._first is not None:
            first, self._first = self._first, None
            first()
        if len(self._chunks) > self.HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.transport.pause_reading()

    async def next(self) -> bytes | None:
        """The next chunk; ``None`` at the end. Raises ``UpstreamError``."""
        chunks = self._chunks
        while not chunks:
            self._waiter = waiter = self._conn.loop.create_future()
            await waiter
        item = chunks.popleft()
        if self._paused and len(chunks) <= self.HIGH_WATER // 2:
            self._paused = False
            if not self._conn.transport.is_closing():
                self._conn.transport.resume_reading()
        if isinstance(item, UpstreamError):
            self._ended = True
            raise item
        if item is None:
            self._ended = True
        return item

    def ready(self) -> bool:
        """Whether ``next`` would answer at once (a chunk, the end or an error is in)."""
        return bool(self._chunks)

    def abandon(self) -> None:
        """The reader stops before the end: close the connection."""
        if not self._ended:
            self._ended = True
            self._conn.abandon_stream(self)


@dataclass(slots=True)
class UpstreamResponse:
    """An upstream response with hop-by-hop headers removed: its body whole, or (``stream``
    set, ``body`` empty) still arriving."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    stream: BodyStream | None = None


class Receiver(Protocol):
    """What a connection hands its response to: a future (``ConnectionPool.request``), or a
    caller that takes it as a call instead (``ConnectionPool.forward``): one fewer task wake-up.

    ``set_result`` gets the response (a streamed one at its head), ``set_exception`` the
    ``UpstreamError`` that cut it; ``done`` says whether either was called.
    """

    def done(self) -> bool:
        """Whether the response or its error was handed over."""
        ...

    def set_result(self, result: UpstreamResponse, /) -> None:
        """The response (a streamed one: at its head, with its ``stream``)."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """The ``UpstreamError`` that ended the request before a response."""
        ...
