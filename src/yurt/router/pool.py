"""Keep-alive HTTP/1.1 connection pool to one upstream server.

The router forwards every request to a runner through this pool, so it sits on
the hot path: it speaks raw HTTP/1.1 over ``asyncio.Protocol`` and parses the
response with ``httptools`` (llhttp) instead of using a general-purpose client.
Each request is written with a single ``transport.write``; the response is
buffered whole, or, when the caller allows it and the upstream streams
(chunked transfer-encoding, or ``text/event-stream``), handed over as soon as its
head arrives, with a ``BodyStream`` that yields the body chunk by chunk.

The pool never retries a request: a failure is reported as an
:class:`UpstreamError` whose ``kind`` lets the caller decide, because only the
caller knows whether the request is safe to send again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import httptools

__all__ = [
    "BodyStream",
    "ConnectionPool",
    "UpstreamError",
    "UpstreamErrorKind",
    "UpstreamResponse",
]

UpstreamErrorKind = Literal["connect_refused", "connect_error", "disconnected", "timeout"]

# Framing and connection management belong to each hop; the router re-frames
# the body itself, so these must not be forwarded.
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"content-length"))
# Their presence means the body is delimited by the message itself rather than
# by the server closing the connection.
_FRAMING = frozenset((b"transfer-encoding", b"content-length"))


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

    __slots__ = ("_chunks", "_conn", "_ended", "_paused", "_waiter")

    # Past this many unread chunks the connection stops reading until the reader catches up.
    HIGH_WATER = 64

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        # A deque and one waiter, not an asyncio.Queue: one reader, and a chunk costs less.
        self._chunks: collections.deque[bytes | UpstreamError | None] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._paused = False

    def feed(self, item: bytes | UpstreamError | None) -> None:
        """From the connection: a chunk, the end (``None``), or the error that cut it."""
        self._chunks.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
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


class _ProtocolViolation(Exception):
    """Raised inside parser callbacks to abort parsing of a bad byte stream."""


class _Connection(asyncio.Protocol):
    """One upstream TCP connection, carrying one request at a time."""

    __slots__ = (
        "_body",
        "_done",
        "_framed",
        "_head",
        "_headers",
        "_headers_done",
        "_idle",
        "_idle_at",
        "_keep_alive",
        "_lost",
        "_lost_waiter",
        "_may_stream",
        "_parser",
        "_pool",
        "_status",
        "_stream",
        "_streams",
        "_timer",
        "_waiter",
        "loop",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the pending request's deadline
        self._idle = False
        self._idle_at = 0.0
        self._lost = False
        self._lost_waiter: asyncio.Future[None] | None = None
        self._head = False
        self._done = False
        self._keep_alive = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._framed = False
        self._may_stream = False  # the caller takes a streamed body
        self._streams = False  # this response streams (chunked, or an event stream)
        self._stream: BodyStream | None = None  # the body being streamed to the caller

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection always hands a stream transport to a TCP protocol.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Failure is not fatal: it only costs latency on small writes.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None and self._stream is None:
            # Nothing was asked on this connection, so the stream can no longer
            # be trusted to line up with our next request.
            self.transport.abort()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail("disconnected", f"invalid response from upstream: {exc!r}")
            self.transport.abort()
            return
        if self._done:
            self._release()

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._headers_done and not self._framed:
            # A response without Content-Length or chunking ends at EOF.
            self._keep_alive = False
            self._complete()
        # Returning None lets the transport close itself; connection_lost then
        # fails any request still waiting.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._idle:
            self._idle = False
            self._pool._idle.remove(self)
        self._fail("disconnected", "upstream closed the connection before the response completed")
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            raise _ProtocolViolation("unsolicited data after the response")
        self._status = 0
        self._headers = []
        self._body = []
        self._headers_done = False
        self._framed = False
        self._streams = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in _HOP_BY_HOP:
            if lname in _FRAMING:
                self._framed = True
                if lname == b"transfer-encoding" and b"chunked" in value.lower():
                    self._streams = True
            return
        if lname == b"content-type" and value.lower().startswith(b"text/event-stream"):
            self._streams = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        if self._status == 101:
            raise _ProtocolViolation("upstream switched protocols, which is not supported")
        if self._head and self._status >= 200:
            # llhttp cannot be told that the request was HEAD, so it would wait
            # for a body that never comes; finish here and swap the parser in
            # _release if the connection is kept.
            self._keep_alive = self._parser.should_keep_alive()
            self._complete()
        elif self._may_stream and self._streams and self._status >= 200 and self._framed:
            self._begin_stream()

    def _begin_stream(self) -> None:
        """Hand the head over now, and the body as it comes."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self._stream = stream = BodyStream(self)
        waiter.set_result(UpstreamResponse(self._status, self._headers, b"", stream))
        self._headers = []

    def on_body(self, body: bytes) -> None:
        if self._done:
            raise _ProtocolViolation("body bytes in a response to HEAD")
        if self._stream is not None:
            self._stream.feed(body)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._done:
            # The HEAD response already finished in on_headers_complete.
            return
        if self._status < 200:
            # Interim 1xx response: the final one follows on the same stream.
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- request lifecycle ------------------------------------------------

    def begin(
        self, head: bool, timeout: float | None, stream: bool = False
    ) -> asyncio.Future[UpstreamResponse]:
        """Arm the connection for one request and return its response future, failed with a
        timeout ``UpstreamError`` if no response is complete within ``timeout`` seconds (a
        streamed body: its stream fails)."""
        waiter: asyncio.Future[UpstreamResponse] = self.loop.create_future()
        self._waiter = waiter
        self._head = head
        self._may_stream = stream
        self._stream = None
        self._done = False
        if timeout is not None:
            self._timer = self.loop.call_later(timeout, self.expire, waiter)
        return waiter

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _complete(self) -> None:
        self._disarm()
        waiter = self._waiter
        self._waiter = None
        self._done = True
        if (stream := self._stream) is not None:
            stream.feed(None)
            return
        if waiter is None or waiter.done():
            # The caller gave up (cancelled); treat the connection as dirty.
            self._keep_alive = False
            return
        body = self._body
        waiter.set_result(
            UpstreamResponse(self._status, self._headers, b"".join(body) if body else b"")
        )
        self._headers = []
        self._body = []

    def _fail(self, kind: UpstreamErrorKind, message: str) -> None:
        self._disarm()
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        self._keep_alive = False
        if (stream := self._stream) is not None:
            self._stream = None
            stream.feed(UpstreamError(kind, message))
        elif not waiter.done():
            waiter.set_exception(UpstreamError(kind, message))

    def _release(self) -> None:
        """Return the connection to the pool after a complete response, or close it."""
        self._stream = None
        pool = self._pool
        if (
            self._keep_alive
            and not self._lost
            and not pool._closed
            and len(pool._idle) < pool._max_idle
            and not self.transport.is_closing()
        ):
            if self._head:
                self._parser = httptools.HttpResponseParser(self)
            self._idle = True
            self._idle_at = self.loop.time()
            pool._idle.append(self)
        else:
            self.transport.close()

    def expire(self, waiter: asyncio.Future[UpstreamResponse]) -> None:
        """Fail ``waiter`` with a timeout if it is still the pending request."""
        if self._waiter is waiter:
            self._fail("timeout", "timed out waiting for the upstream response")
            # Whatever the server sends later would belong to this request.
            self.transport.abort()

    def abandon(self, waiter: asyncio.Future[UpstreamResponse]) -> None:
        """Drop the connection if ``waiter`` was still pending when the caller left."""
        if self._waiter is waiter:
            self._waiter = None
            self._disarm()
            self.transport.abort()

    def abandon_stream(self, stream: BodyStream) -> None:
        """Drop the connection whose streamed body ``stream`` is no longer read."""
        if self._stream is stream:
            self._stream = None
            self._waiter = None
            self._disarm()
            self.transport.abort()

    def abandon_if_cancelled(self, waiter: asyncio.Future[UpstreamResponse]) -> None:
        """``abandon``, for a caller that cancelled ``waiter`` (a done callback)."""
        if waiter.cancelled():
            self.abandon(waiter)

    def close_and_wait(self) -> asyncio.Future[None]:
        """Close the connection; the future resolves once it is fully closed."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        if self._lost:
            waiter.set_result(None)
        else:
            self._lost_waiter = waiter
            self.transport.close()
        return waiter


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to a single ``host:port``.

    Connections are reused LIFO, so a burst that has passed leaves the surplus
    connections cold where the server's keep-alive timeout can reap them.
    """

    __slots__ = (
        "_closed",
        "_connect_timeout",
        "_host",
        "_idle",
        "_max_age",
        "_max_idle",
        "_port",
        "_request_tail",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 64,
        connect_timeout: float = 5.0,
        max_idle_age: float = 600.0,
        token: str = "",
    ) -> None:
        self._host = host
        self._port = port
        self._max_idle = max_idle
        # Well inside the runner's keep-alive (an hour): a connection the server may be closing
        # right now is never reused, so a request never meets a close it could not have seen.
        self._max_age = max_idle_age
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._closed = False
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # Everything between the target and the body length is constant, the runner's token
        # (runner/token.py) with it.
        shown = f"x-yurt-runner-token: {token}\r\n" if token else ""
        self._request_tail = f" HTTP/1.1\r\nhost: {authority}\r\n{shown}content-length: ".encode()

    @property
    def idle_count(self) -> int:
        """Number of open connections waiting for a request."""
        return len(self._idle)

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] | bytes,
        body: bytes,
        # A per-call deadline that is cheaper than asyncio.timeout on the hot path.
        timeout: float | None,
        *,
        stream: bool = False,
    ) -> UpstreamResponse:
        """Send one request and return the complete response.

        ``headers`` must not contain host, content-length or connection; they
        are written by the pool. Given as bytes, they are header lines already framed
        (``name: value\r\n`` each), written as they are. ``timeout`` bounds the wait for
        the response (not the connect, which ``connect_timeout`` bounds); ``None`` waits
        forever. Raises :class:`UpstreamError`; the request is never retried,
        not even when a reused idle connection turns out to have been closed
        by the server (kind ``"disconnected"``). ``stream``: a streamed response
        comes back at its head, with its ``stream`` to read the body from.
        """
        if self._closed:
            raise UpstreamError("connect_error", "connection pool is closed")
        conn = self._take_idle()
        if conn is None:
            conn = await self._connect()
        waiter = self._send(conn, method, target, headers, body, timeout, stream)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.abandon(waiter)
            raise

    def send(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] | bytes,
        body: bytes,
        timeout: float | None,
    ) -> asyncio.Future[UpstreamResponse] | None:
        """``request`` without a coroutine, on an idle connection: the response's future
        (failed with the ``UpstreamError`` that ``request`` would raise), or None when there is
        no idle connection (or the pool is closed): then call ``request``.

        A caller that gives up cancels the future; that closes the connection, as ``request``
        does when cancelled.
        """
        if self._closed:
            return None
        conn = self._take_idle()
        if conn is None:
            return None
        waiter = self._send(conn, method, target, headers, body, timeout)
        waiter.add_done_callback(conn.abandon_if_cancelled)
        return waiter

    def _send(
        self,
        conn: _Connection,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] | bytes,
        body: bytes,
        timeout: float | None,
        stream: bool = False,
    ) -> asyncio.Future[UpstreamResponse]:
        parts = [method, b" ", target, self._request_tail, b"%d\r\n" % len(body)]
        if isinstance(headers, bytes):
            parts.append(headers)
        else:
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        parts.append(body)
        waiter = conn.begin(method == b"HEAD", timeout, stream)
        conn.transport.write(b"".join(parts))
        return waiter

    async def close(self) -> None:
        """Close idle connections and refuse requests from now on.

        Requests already in flight finish normally; their connections are
        closed instead of being returned to the pool.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        waiters = []
        for conn in idle:
            conn._idle = False
            waiters.append(conn.close_and_wait())
        if waiters:
            await asyncio.gather(*waiters)

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn._idle = False
            if conn.transport.is_closing():
                continue
            if conn.loop.time() - conn._idle_at > self._max_age:
                conn.transport.close()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, loop), self._host, self._port
                )
        except ConnectionRefusedError as exc:
            raise UpstreamError("connect_refused", f"connection to {where} refused") from exc
        except TimeoutError as exc:
            raise UpstreamError(
                "connect_error", f"connecting to {where} timed out after {self._connect_timeout}s"
            ) from exc
        except OSError as exc:
            raise UpstreamError("connect_error", f"cannot connect to {where}: {exc}") from exc
        return conn
