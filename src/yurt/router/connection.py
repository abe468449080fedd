"""One keep-alive HTTP/1.1 connection to a runner, and the idle ones a pool keeps.

The router forwards every request to a runner over these, so they sit on the hot path: a
connection speaks raw HTTP/1.1 over ``asyncio.Protocol`` and parses the response with
``httptools`` (llhttp) instead of using a general-purpose client. It carries one request at a
time: ``begin`` (or ``arm``) arms it, the parser's callbacks fill the response, and a complete
response puts it back among the idle connections (or closes it) before its caller has it; a
failure, a deadline or a caller that leaves closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import cast

import httptools

from yurt.router.upstream import (
    BodyStream,
    Receiver,
    UpstreamError,
    UpstreamErrorKind,
    UpstreamResponse,
)

__all__ = ["IdleConnections", "UpstreamConnection"]

# Framing and connection management belong to each hop; the router re-frames
# the body itself, so these must not be forwarded.
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"content-length"))
# Their presence means the body is delimited by the message itself rather than
# by the server closing the connection.
_FRAMING = frozenset((b"transfer-encoding", b"content-length"))
# What on_header looks at: the hop-by-hop headers and the content type.
_NOTED = _HOP_BY_HOP | {b"content-type"}


# A timer may fire up to a tick of the loop's clock (1 ms on uvloop) before the time it was set
# for: a deadline that close is due.
_TIMER_SLACK = 0.001


class IdleConnections:
    """The open connections of one pool waiting for a request, reused LIFO.

    LIFO, so a burst that has passed leaves the surplus connections cold where the server's
    keep-alive timeout can reap them. A connection appends itself after a complete response
    (while fewer than ``max_idle`` wait and the pool is open) and removes itself when lost.
    """

    __slots__ = ("closed", "conns", "max_age", "max_idle")

    def __init__(self, max_idle: int, max_age: float) -> None:
        self.conns: list[UpstreamConnection] = []
        self.closed = False
        self.max_idle = max_idle
        # Well inside the runner's keep-alive (an hour): a connection the server may be closing
        # right now is never reused, so a request never meets a close it could not have seen.
        self.max_age = max_age

    def take(self) -> UpstreamConnection | None:
        """The most recently kept connection still usable; None if none is, or once closed."""
        if self.closed:
            return None
        conns = self.conns
        while conns:
            conn = conns.pop()
            conn.idle = False
            if conn.transport.is_closing():
                continue
            if conn.loop.time() - conn.idle_at > self.max_age:
                conn.transport.close()
                continue
            return conn
        return None

    async def close(self) -> None:
        """Keep no connection from now on; close those waiting and wait until they are closed."""
        self.closed = True
        conns, self.conns = self.conns, []
        waiters = []
        for conn in conns:
            conn.idle = False
            waiters.append(conn.close_and_wait())
        if waiters:
            await asyncio.gather(*waiters)


class _ProtocolViolation(Exception):
    """Raised inside parser callbacks to abort parsing of a bad byte stream."""


class UpstreamConnection(asyncio.Protocol):
    """One upstream TCP connection, carrying one request at a time.

    Between requests it waits in its pool's ``IdleConnections`` (``idle`` set), where it puts
    itself back after a complete response and from which it removes itself when lost.
    """

    __slots__ = (
        "_body",
        "_deadline",
        "_done",
        "_framed",
        "_head",
        "_headers",
        "_headers_done",
        "_keep_alive",
        "_kept",
        "_lost",
        "_lost_waiter",
        "_may_stream",
        "_parser",
        "_settled",
        "_status",
        "_stream",
        "_streams",
        "_timer",
        "_timer_at",
        "_waiter",
        "idle",
        "idle_at",
        "loop",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(self, kept: IdleConnections, loop: asyncio.AbstractEventLoop) -> None:
        self._kept = kept
        self.loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: Receiver | None = None
        # A complete response, handed to its receiver once the connection is back among the
        # idle ones (so that whoever the receiver starts next can take it).
        self._settled: tuple[Receiver, UpstreamResponse] | None = None
        # The pending request's deadline (loop time), and a timer that fires at or before it.
        # The timer outlives the request it was set for: the next one's deadline is later, and
        # when the timer finds that it is not due yet it sets itself again (``_on_timer``), so
        # requests in a row cost no timer each.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.idle = False  # waiting in ``kept`` for a request
        self.idle_at = 0.0
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
            if self._settled is not None:  # complete before the bytes that broke the stream
                self._settle()
            return
        if self._done:
            self._release()
            settled = self._settled
            if settled is not None:  # ``_settle``, written out
                self._settled = None
                settled[0].set_result(settled[1])

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._headers_done and not self._framed:
            # A response without Content-Length or chunking ends at EOF.
            self._keep_alive = False
            self._complete()
            if self._settled is not None:
                self._settle()
        # Returning None lets the transport close itself; connection_lost then
        # fails any request still waiting.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.idle:
            self.idle = False
            self._kept.conns.remove(self)
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
        if lname in _NOTED:
            if lname in _HOP_BY_HOP:
                if lname in _FRAMING:
                    self._framed = True
                    if lname == b"transfer-encoding" and b"chunked" in value.lower():
                        self._streams = True
                return
            if value.lower().startswith(b"text/event-stream"):  # the content-type
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
        self.arm(waiter, head, timeout, stream)
        return waiter

    def arm(self, receiver: Receiver, head: bool, timeout: float | None, stream: bool) -> None:
        """``begin``, with the response (or its error) handed to ``receiver``."""
        self._waiter = receiver
        self._head = head
        self._may_stream = stream
        self._stream = None
        self._done = False
        if timeout is None:
            self._deadline = None
            return
        self._deadline = deadline = self.loop.time() + timeout
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        """The timer is due: the pending request has timed out, or, if its deadline is later
        (the timer was set for an earlier request), the timer is set again for it."""
        self._timer = None
        deadline, waiter = self._deadline, self._waiter
        if deadline is None or waiter is None:
            return  # nothing pending: the next request sets a timer if it needs one
        if deadline - self.loop.time() > _TIMER_SLACK:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
            return
        self.expire(waiter)

    def _disarm(self) -> None:
        self._deadline = None  # a timer still set finds nothing due

    def _complete(self) -> None:
        self._deadline = None  # ``_disarm``
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
        response = UpstreamResponse(self._status, self._headers, b"".join(body) if body else b"")
        self._settled = (waiter, response)  # handed over once released (``_settle``)
        self._headers = []
        self._body = []

    def _settle(self) -> None:
        """Hand the complete response to its receiver."""
        settled = self._settled
        assert settled is not None
        self._settled = None
        waiter, response = settled
        waiter.set_result(response)

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
        kept = self._kept
        if (
            self._keep_alive
            and not self._lost
            and not kept.closed
            and len(kept.conns) < kept.max_idle
            and not self.transport.is_closing()
        ):
            if self._head:
                self._parser = httptools.HttpResponseParser(self)
            self.idle = True
            self.idle_at = self.loop.time()
            kept.conns.append(self)
        else:
            self.transport.close()

    def expire(self, waiter: Receiver) -> None:
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
