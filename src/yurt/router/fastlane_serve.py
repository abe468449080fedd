"""A fast-lane connection's state, and how the requests read on it are answered, in order.

``FrontProtocol`` (``fastlane.py``) parses; this half serves: one worker task per connection
takes the exchanges read (``fastlane_exchange.Exchange``) in turn, hands each to the request
core, and writes its reply, stream or tunnel. The common request needs no task: a sync run that
finds a free slot and an idle connection to its runner is sent from the parser's callback and
answered from the runner connection's (``flight.py``); while it is out, ``worker`` is its
``Flight``, and what else is read waits in the queue as it would behind a task (a streamed reply
goes on in a task from its first chunk). The connection's ``phase`` and ``mode`` are the
machines ``fastlane_state.py`` draws.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self, cast

import httptools
import structlog

from yurt.router.admitted import Answer, Stream, SyncRun
from yurt.router.fastlane_exchange import ENDED, RELAYING, Exchange
from yurt.router.fastlane_state import (
    CLOSABLE,
    CLOSING,
    HAND_OVER,
    HEAD,
    IDLE,
    LINGER,
    OPEN,
    TUNNEL,
)
from yurt.router.fastlane_wire import send_stream, upgrade_head
from yurt.router.flight import Flight
from yurt.router.http import STATUS_LINES, Reply, error_reply, new_request_id, status_line
from yurt.router.tunnel import Tunnel

if TYPE_CHECKING:
    from yurt.config import RouterConfig
    from yurt.router.core import RequestCore

log = structlog.get_logger("yurt.router")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After answering a request whose body was not read: how much more of it to read and drop, and
# for how long, so that the client reads the answer (closing with unread data resets it).
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0
# The headers of the last plain reply written, and their lines (``Lane._write``). A list set in
# place: setting a class attribute instead would reset the interpreter's attribute caches for
# every connection's class each time.
_LAST_REPLY: list[Any] = [[], b""]


class Lane(asyncio.Protocol):
    """A client connection's state, and the worker that answers its requests in order."""

    def __init__(
        self,
        core: RequestCore,
        config: RouterConfig,
        fallback: Callable[[], asyncio.Protocol],
        connections: set[Self],
    ) -> None:
        self.core = core
        self.config = config
        self.fallback = fallback
        self.connections = connections
        self.max_body_size = config.max_body_size
        # A Content-Length of this many digits or fewer is within the body limit.
        self.short_length = len(str(config.max_body_size)) - 1
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.phase = IDLE  # where the parser is in the current request
        self.mode = OPEN  # what becomes of the bytes read
        # The current request's head, as the parser delivers it.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length = b"0"
        self.expect = b""
        self.host = b""
        self.timeout_header: tuple[bytes, bytes] | None = None
        self.authorization: bytes | None = None  # the caller's Authorization value, if any
        self.scheme = "http"
        self.current: Exchange | None = None  # the request whose body is being read
        self.queue: deque[Exchange] = deque()  # read, waiting to be served in turn
        self.serving: Exchange | None = None  # the one the worker is on
        self.continue_for: Exchange | None = None  # its 100 Continue waits for earlier replies
        # A task, or, while a run is out without one, its ``Flight``.
        self.worker: asyncio.Task[None] | Flight | None = None
        self.head_bytes = 0  # bytes read while the phase was HEAD
        self.linger_left = 0  # LINGER: bytes still to drop before closing
        self.raw: bytes | bytearray | None = None  # this request's bytes, while they are exact
        # UPGRADING: what the caller sends before its session is open; TUNNEL: the session.
        self.spliced: bytearray | None = None
        self.tunnel: Tunnel | None = None
        self.loop = asyncio.get_running_loop()
        self.last_active = self.loop.time()  # read by the router's idle sweep
        # For the slow-client deadlines: when this request's head and body began to arrive
        # (as of the read that brought their first bytes), and how much body has come since.
        self.head_began = self.last_active
        self.body_began = self.last_active
        self.body_bytes = 0

    def _reads_requests(self) -> bool:
        """Whether requests read are still answered here (OPEN, or a hand-over pending)."""
        return self.mode is OPEN or self.mode is HAND_OVER

    def _close_mode(self) -> None:
        """Take no new request: the connection closes after the reply being made."""
        if self.mode in CLOSABLE:
            self.mode = CLOSING

    def connection_made(self: Self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- serving ---------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        """Serve ``exchange``, read while nothing else was being served: a sync run straight
        to a runner if it needs no wait (``RequestCore.forward``), else by the worker."""
        admitted = exchange.admitted
        if isinstance(admitted, SyncRun) and exchange.error is None and not self.queue:
            self.serving = exchange
            try:
                pending = self.core.forward(
                    admitted,
                    exchange.headers,
                    b"".join(exchange.body),
                    exchange.mark_sent,
                    self._landed,
                )
            except Exception:  # a bug of ours, raised in the parser's callback: answered here
                self.serving = None
                self._failed()
                return
            if isinstance(pending, Flight):
                self.worker = pending
            else:
                self.worker = self.loop.create_task(self._serve(exchange, pending))
            return
        self.queue.append(exchange)
        self.worker = self.loop.create_task(self._serve())

    def _landed(self, answer: tuple[Reply, str] | Awaitable[Answer]) -> None:
        """The answer to the run ``_start`` sent (from the runner connection's callbacks):
        written now, or, if it must be awaited (a stream), by the worker."""
        exchange = self.serving
        assert exchange is not None
        if not isinstance(answer, tuple):
            self.worker = self.loop.create_task(self._serve(exchange, answer))
            return
        try:  # ``_reply``, written out
            reply, request_id = answer
            keep_alive = exchange.keep_alive and self.mode is not CLOSING
            self._write(reply, request_id.encode(), keep_alive, exchange.http10)
            if self.config.access_log:
                self._access(exchange, reply.status, request_id)
        except Exception:
            keep_alive = self._failed()
        if keep_alive and (self.queue or self.continue_for is not None):
            # Read meanwhile (pipelined, or a 100-continue to send): the worker goes on.
            self.worker = self.loop.create_task(self._serve())
            return
        self.serving = None
        self.worker = None
        self.last_active = self.loop.time()
        if self.phase is HEAD or self.mode is HAND_OVER:
            self._idle_again()

    async def _serve(
        self, exchange: Exchange | None = None, pending: Awaitable[Answer] | None = None
    ) -> None:
        """Serve what was read, in order (``exchange`` first, its answer ``pending``)."""
        try:
            while exchange is not None or self.queue:
                if exchange is None:
                    exchange = self.queue.popleft()
                try:
                    keep_alive = await self._serve_one(exchange, pending)
                except Exception:
                    self._failed()
                    return
                if not keep_alive:
                    return
                exchange = pending = None
            if self.continue_for is not None and self.transport is not None:
                self.continue_for = None
                self.transport.write(CONTINUE)
                # The client waited for this to send its body: the body's deadline starts now.
                self.body_began = self.loop.time()
        finally:
            self.serving = None
            self.worker = None
        self._idle_again()

    def _failed(self) -> bool:
        """A bug of ours: the client gets an answer, not a connection left hanging (a stream
        already begun has closed its connection: nothing is written). False: closing."""
        log.exception("request_failed")
        reply = error_reply(500, "internal_error", "the router failed this request")
        self._close_mode()
        self._write(reply, new_request_id().encode(), keep_alive=False, linger=True)
        return False

    def _idle_again(self) -> None:
        """Nothing is being served any more."""
        self.last_active = self.loop.time()
        if self.phase is HEAD:  # a pipelined head waited on what was served before it
            self.head_began = self.last_active
        if self.mode is HAND_OVER:
            self._hand_over()

    async def _serve_one(self, exchange: Exchange, pending: Awaitable[Answer] | None) -> bool:
        """Serve one request (or refusal), whose answer is ``pending`` if it is on its way
        already; False if the connection is to close."""
        admitted = exchange.admitted
        if pending is not None:
            self.serving = exchange
            answer = await pending
        elif exchange.error is not None or admitted is None:
            assert exchange.error is not None
            answer = (exchange.error, new_request_id())
        else:
            self.serving = exchange
            answer = await self.core.serve(
                admitted, exchange.headers, b"".join(exchange.body), on_sent=exchange.mark_sent
            )
        if isinstance(answer, Tunnel):
            await self._splice(exchange, answer)
            return False
        if isinstance(answer, Stream):
            keep_alive = exchange.keep_alive and self.mode is not CLOSING
            keep_alive = await self._stream(exchange, answer, keep_alive)
            if self.config.access_log:
                self._access(exchange, answer.status, answer.request_id)
            return keep_alive
        return self._reply(exchange, answer)

    def _reply(self, exchange: Exchange, answer: tuple[Reply, str]) -> bool:
        """Write a plain reply; False if the connection is to close."""
        reply, request_id = answer
        keep_alive = exchange.keep_alive and self.mode is not CLOSING
        self._write(reply, request_id.encode(), keep_alive, exchange.http10, exchange.early)
        if self.config.access_log:
            self._access(exchange, reply.status, request_id)
        return keep_alive

    def _access(self, exchange: Exchange, status: int, request_id: str) -> None:
        """The access log's line for an answered request."""
        log.info(
            "request",
            method=exchange.method(),
            target=exchange.target(),
            status=status,
            request_id=request_id,
        )

    async def _stream(self, exchange: Exchange, stream: Stream, keep_alive: bool) -> bool:
        """Send a stream, chunked (HTTP/1.0: until the connection closes)."""
        transport = self.transport
        assert transport is not None
        exchange.stage = RELAYING
        try:
            ended, keep_alive = await send_stream(transport, stream, keep_alive, exchange.http10)
        finally:
            exchange.stage = ENDED
        if not ended or not keep_alive or self.mode is CLOSING:
            transport.close()
            return False
        return True

    async def _splice(self, exchange: Exchange, tunnel: Tunnel) -> None:
        """Send the runner's 101, then copy bytes both ways until either side ends."""
        transport = self.transport
        assert transport is not None
        transport.write(upgrade_head(tunnel.headers))
        early, self.spliced = bytes(self.spliced or b""), None
        self.tunnel, self.mode = tunnel, TUNNEL
        if early:
            tunnel.send(early)
        exchange.stage = RELAYING  # the caller going ends the session
        try:
            await tunnel.pump(transport.write)
        finally:
            exchange.stage = ENDED
            self.tunnel, self.mode = None, CLOSING
            tunnel.close()
            transport.close()

    def _write(
        self,
        reply: Reply,
        request_id: bytes,
        keep_alive: bool,
        http10: bool = False,
        linger: bool = False,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.mode is LINGER:
            return  # closed, or lingering after its last answer (its write side is shut)
        status = reply.status
        parts = [STATUS_LINES.get(status) or status_line(status)]
        headers = reply.headers
        # Header lines framed once while replies bring the same headers, as a runner's do
        # (but for its Date, once a second).
        if headers != _LAST_REPLY[0]:
            lines = [b"%s: %s\r\n" % header for header in headers]
            _LAST_REPLY[:] = (list(headers), b"".join(lines))  # a copy of the list: ours
        parts.append(_LAST_REPLY[1])
        parts.append(
            b"content-length: %d\r\nx-yurt-request-id: %s\r\nx-fal-request-id: %s\r\n"
            % (len(reply.body), request_id, request_id)
        )
        if not keep_alive:
            parts.append(b"connection: close\r\n\r\n")
        else:
            # HTTP/1.0 closes by default: a kept connection must say so (RFC 9112 9.3).
            parts.append(b"connection: keep-alive\r\n\r\n" if http10 else b"\r\n")
        parts.append(reply.body)
        transport.write(b"".join(parts))
        if linger:
            self._linger(transport)
        elif not keep_alive:
            transport.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after the client had a chance to read the answer: half-close, then read and
        drop what it still sends, up to LINGER_BYTES or LINGER_SECONDS."""
        self.mode, self.linger_left = LINGER, LINGER_BYTES
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _hand_over(self) -> None:
        transport = self.transport
        assert transport is not None and self.raw is not None
        raw, self.raw = bytes(self.raw), None
        proto = self.fallback()
        self.connections.discard(self)
        transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.data_received(raw)
        transport.resume_reading()
