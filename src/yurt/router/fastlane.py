"""The router's fast lane: app and queue requests framed with ``asyncio.Protocol`` + httptools.

Sync runs and queue requests are the hot paths. aiohttp's server costs about as much CPU per
request as the rest of the router together, so requests to an app or to ``/queue/`` are parsed
here with httptools (llhttp), handed to the request core (``core.py``) and answered with one
``transport.write`` (a stream: one per chunk). yurt's own routes under ``/_yurt/`` go to the
aiohttp face: the connection is handed over whole, with the bytes of the request read so far,
and stays there.

The hand-over needs the exact bytes of the request, which we have when the request began at the
start of a read. A request pipelined behind another in the same read (HTTP/1.1 pipelining,
which mainstream clients do not use) can still be a sync run; if it needs the aiohttp face it
gets 400 and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools
import structlog

from yurt.router.core import Admitted, Answer, QueueCall, Stream, SyncRun, Upgrade
from yurt.router.http import Reply, error_reply, head_refusal, new_request_id, status_line
from yurt.router.options import TIMEOUT_HEADERS
from yurt.router.tunnel import Tunnel

if TYPE_CHECKING:
    from yurt.config import RouterConfig
    from yurt.router.core import RequestCore

log = structlog.get_logger("yurt.router")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# What goes to a runner (a tuple: ``A | B`` would build a union on every request).
_TO_RUNNER = (SyncRun, Upgrade)
# The headers on_header notes.
_NOTED = frozenset((b"content-length", b"expect", b"host", *TIMEOUT_HEADERS))
# A request line and headers past this many bytes get 431 (aiohttp's own limits are per line).
MAX_HEAD_BYTES = 64 * 1024
# After answering a request whose body was not read: how much more of it to read and drop, and
# for how long, so that the client reads the answer (closing with unread data resets it).
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0


class _Run:
    """One app or queue request being read or waiting to be served."""

    __slots__ = (
        "admitted",
        "body",
        "early",
        "error",
        "headers",
        "http10",
        "keep_alive",
        "sent",
        "size",
    )

    def __init__(self, admitted: Admitted | None, headers: list[tuple[bytes, bytes]]) -> None:
        self.admitted = admitted  # what the core made of its head; None: refused
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.http10 = False
        self.error: Reply | None = None
        self.early = False  # answered before its body was read (then the connection closes)
        self.sent = False  # forwarded to a runner: past the point where a hang-up cancels it

    def mark_sent(self) -> None:
        """The request is on its way to a runner."""
        self.sent = True

    @classmethod
    def refused(cls, reply: Reply, headers: list[tuple[bytes, bytes]]) -> _Run:
        """A request answered with ``reply`` without reaching a runner."""
        run = cls(None, headers)
        run.error = reply
        return run


class FrontProtocol(asyncio.Protocol):
    """One client connection, in the fast lane until it is handed to aiohttp."""

    def __init__(
        self,
        core: RequestCore,
        config: RouterConfig,
        fallback: Callable[[], asyncio.Protocol],
        connections: set[FrontProtocol],
    ) -> None:
        self.core = core
        self.config = config
        self.fallback = fallback
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length = b"0"
        self.expect = b""
        self.host = b""
        self.timeout_header: tuple[bytes, bytes] | None = None
        self.scheme = "http"
        self.current: _Run | None = None
        self.pending_continue = False
        self.watching = False
        self.queue: deque[_Run] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.in_message = False
        self.in_head = False  # a request line and headers are being read
        self.head_bytes = 0  # bytes read while they were
        self.serving: _Run | None = None  # the sync run the worker is on
        self.discard: int | None = None  # lingering: bytes still to drop before closing
        self.completed_in_read = False
        self.raw: bytes | bytearray | None = None  # this request's bytes, while they are exact
        self.hand_over = False
        self.closing = False
        # An upgrade: what the caller sends before its session is open, then the session.
        self.spliced: bytearray | None = None
        self.tunnel: Tunnel | None = None
        self.loop = asyncio.get_running_loop()
        self.last_active = self.loop.time()  # read by the router's idle sweep
        # For the slow-client deadlines: when this request's head and body began to arrive
        # (as of the read that brought their first bytes), and how much body has come since.
        self.head_began = self.last_active
        self.body_began = self.last_active
        self.body_bytes = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        if self.worker is None:
            return
        serving = self.serving
        if self.watching or (serving is not None and not serving.sent):
            # A status stream or a wait for a result only watches, and a run still waiting for
            # a runner has not started: nobody is left for either (and a waiting run no longer
            # counts as demand).
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.tunnel is not None:
            self.tunnel.send(data)
            return
        if self.spliced is not None:
            self.spliced += data
            return
        if self.discard is not None:
            self.discard -= len(data)
            if self.discard <= 0 and self.transport is not None:
                self.transport.close()
            return
        if self.in_message:
            raw = self.raw
            if isinstance(raw, bytearray):
                raw += data
            elif raw is not None:  # the read it began in, as it came: now grown in place
                self.raw = bytearray(raw) + data
        else:
            self.raw = data  # kept as it came: most requests never need it
        self.completed_in_read = False
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # Past the upgrade request's head the bytes are the new protocol's: kept for the
            # session if the core took it (else on_headers_complete handed the connection over).
            if not self.hand_over:
                self.spliced = bytearray(data[exc.args[0] :] if exc.args else b"")
        except httptools.HttpParserError as exc:
            if not self.hand_over:
                self._fail_connection(error_reply(400, "bad_request", f"malformed HTTP: {exc}"))
                return
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES and not self.closing:
            detail = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
            self._fail_connection(error_reply(431, "request_header_fields_too_large", detail))
            return
        if self.hand_over:
            assert self.transport is not None
            if self.worker is None:
                self._hand_over()
            else:
                # Replies must keep request order: hand over once the fast lane is done.
                self.transport.pause_reading()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self.in_head, self.head_bytes = True, 0
        self.head_began = self.last_active
        self.url = b""
        self.headers = []
        self.content_length = b"0"
        self.expect = b""
        self.host = b""
        self.timeout_header = None
        if self.completed_in_read and not self.hand_over:
            self.raw = None  # began mid-read: its exact bytes are unknown

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        # The two headers the fast lane itself reads, noted in passing rather than searched for.
        lname = name.lower()
        if lname not in _NOTED:
            return
        if lname == b"content-length":
            self.content_length = value
        elif lname == b"expect":
            self.expect = value
        elif lname == b"host":
            self.host = value
        elif lname in TIMEOUT_HEADERS and self.timeout_header is None:
            self.timeout_header = (lname, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.body_began, self.body_bytes = self.last_active, 0
        if self.hand_over or self.closing:
            return
        # Before anything is decided, hand-overs included: aiohttp's parser would refuse it too,
        # in text.
        if (refusal := head_refusal(self.url, self.headers)) is not None:
            self._fail_connection(refusal)
            return
        raw_path, _, query = self.url.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        upgrade = self.parser.should_upgrade()
        admitted = self.core.admit(
            self.parser.get_method(),
            path,
            query.decode("latin-1"),
            self.headers,
            self.scheme,
            self.host.decode("latin-1"),
            self.timeout_header,
            upgrade=upgrade,
        )
        if admitted is None:  # yurt's own routes, or an upgrade: the aiohttp face serves them
            if self.raw is None:
                # Answered in turn, after the replies it was pipelined behind; then we close.
                reply = error_reply(400, "bad_request", "pipelined request needs a new connection")
                self.current = _Run.refused(reply, self.headers)
                self.current.keep_alive = False
            else:
                self.hand_over = True
            return
        if isinstance(admitted, Reply):
            run = _Run.refused(admitted, self.headers)
        else:
            run = _Run(admitted, self.headers)
        run.keep_alive = not upgrade  # after an upgrade request comes the other protocol
        self._expect_body(run)
        self.current = run
        self.raw = None  # the fast lane keeps no second copy of the body

    def _expect_body(self, run: _Run) -> None:
        try:
            size = int(self.content_length)
        except ValueError:
            size = 0
        if size > self.config.max_body_size:
            self._check_size(run, size)
        if run.early or not self.expect or self.expect.lower() != b"100-continue":
            return
        if run.error is not None:
            # Refused before its body: the final answer instead of 100 (RFC 9110 10.1.1).
            self._answer_early(run)
        elif self.worker is None and not self.queue:
            assert self.transport is not None
            self.transport.write(_CONTINUE)
        else:
            # Earlier replies are still being written: it goes out after them.
            self.pending_continue = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        run = self.current
        if run is None or run.early:
            return
        run.size += len(body)
        if run.error is not None:
            # Already refused (an unknown app, a bad header): read past its body only up to
            # the limit, then answer without reading on.
            if run.size > self.config.max_body_size:
                self._answer_early(run)
            return
        if run.size > self.config.max_body_size:
            self._check_size(run, run.size)
        if run.error is None:
            run.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.completed_in_read = True
        run, self.current = self.current, None
        transport = self.transport
        if run is None or run.early or transport is None or transport.is_closing():
            return  # nobody to answer; a request read while the router stops is still served
        run.keep_alive = run.keep_alive and self.parser.should_keep_alive()
        run.http10 = self.parser.get_http_version() == "1.0"
        self.queue.append(run)
        if self.worker is None:
            self.worker = self.loop.create_task(self._serve())

    # -- serving ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while self.queue:
                run = self.queue.popleft()
                try:
                    keep_alive = await self._serve_run(run)
                except Exception:
                    # A bug of ours: the client gets an answer, not a connection left hanging
                    # (a stream already begun has closed its connection: nothing is written).
                    log.exception("request_failed")
                    reply = error_reply(500, "internal_error", "the router failed this request")
                    self.closing = True
                    self._write(reply, new_request_id().encode(), keep_alive=False, linger=True)
                    return
                if not keep_alive:
                    return
            if self.pending_continue and self.transport is not None:
                self.pending_continue = False
                self.transport.write(_CONTINUE)
                # The client waited for this to send its body: the body's deadline starts now.
                self.body_began = self.loop.time()
        finally:
            self.watching = False
            self.worker = None
        self.last_active = self.loop.time()
        if self.in_head:  # a pipelined head waited on what was served before it, not on its sender
            self.head_began = self.last_active
        if self.hand_over:
            self._hand_over()

    async def _serve_run(self, run: _Run) -> bool:
        """Serve one request (or refusal); False if the connection is to close."""
        admitted = run.admitted
        if run.error is not None or admitted is None:
            assert run.error is not None
            answer: Answer = (run.error, new_request_id())
        else:
            # A run still waiting for a runner, and a GET to the queue (it only reads, or waits
            # for a result), leave nobody to answer once the caller hangs up: both are cancelled.
            self.serving = run if isinstance(admitted, _TO_RUNNER) else None
            self.watching = isinstance(admitted, QueueCall) and admitted.method == b"GET"
            try:
                answer = await self.core.serve(
                    admitted, run.headers, b"".join(run.body), on_sent=run.mark_sent
                )
            finally:
                self.serving = None
                self.watching = False
        keep_alive = run.keep_alive and not self.closing
        if isinstance(answer, Tunnel):
            await self._splice(answer)
            return False
        if isinstance(answer, Stream):
            keep_alive = await self._stream(answer, keep_alive, run.http10)
            status, request_id = answer.status, answer.request_id
        else:
            reply, request_id = answer
            self._write(reply, request_id.encode(), keep_alive, run.http10, linger=run.early)
            status = reply.status
        if self.config.access_log:
            log.info(
                "request",
                method=_method(admitted),
                target=_target(admitted),
                status=status,
                request_id=request_id,
            )
        return keep_alive

    async def _stream(self, stream: Stream, keep_alive: bool, http10: bool) -> bool:
        """Send a stream, chunked (HTTP/1.0: until the connection closes)."""
        rid = stream.request_id.encode()
        head = [status_line(stream.status)]
        head += [b"%s: %s\r\n" % header for header in stream.headers]
        head.append(b"x-yurt-request-id: %s\r\nx-fal-request-id: %s\r\n" % (rid, rid))
        if http10 or not keep_alive:
            head.append(b"connection: close\r\n")
            keep_alive = False
        if not http10:
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        pending = b"".join(head)
        ended = False
        self.watching = True
        try:
            async for chunk, last in stream.chunks:
                transport = self.transport
                if transport is None or transport.is_closing():
                    break
                data = chunk
                if not http10:
                    data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b""
                    if last:
                        data += b"0\r\n\r\n"
                # The head goes with the first event, the terminator with the last.
                transport.write(pending + data)
                pending = b""
                if last:
                    ended = True
                    break
        finally:
            self.watching = False
            if not ended and self.transport is not None:
                self.transport.close()  # cut short: the client must not take it as complete
            await stream.chunks.aclose()
        if not ended or not keep_alive or self.closing:
            if self.transport is not None:
                self.transport.close()
            return False
        return True

    async def _splice(self, tunnel: Tunnel) -> None:
        """Send the runner's 101, then copy bytes both ways until either side ends."""
        transport = self.transport
        assert transport is not None
        head = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        head += [b"%s: %s\r\n" % header for header in tunnel.headers]
        head.append(b"\r\n")
        transport.write(b"".join(head))
        early, self.spliced = bytes(self.spliced or b""), None
        self.tunnel = tunnel
        if early:
            tunnel.send(early)
        self.watching = True  # the caller going ends the session
        try:
            await tunnel.pump(transport.write)
        finally:
            self.watching = False
            self.tunnel = None
            tunnel.close()
            transport.close()

    def _write(
        self,
        reply: Reply,
        request_id: bytes,
        keep_alive: bool,
        http10: bool = False,
        *,
        linger: bool = False,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.discard is not None:
            return  # closed, or lingering after its last answer (its write side is shut)
        parts = [status_line(reply.status)]
        for name, value in reply.headers:
            parts += (name, b": ", value, b"\r\n")
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
        self.discard = LINGER_BYTES
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    # -- helpers ---------------------------------------------------------------------------

    def _check_size(self, run: _Run, size: int) -> None:
        if size > self.config.max_body_size and run.error is None:
            exc = self.core.too_large()
            run.error = error_reply(exc.status, exc.error_type, exc.detail)
            run.body = []
            self._answer_early(run)

    def _answer_early(self, run: _Run) -> None:
        """Answer ``run`` without reading its body (too large, or refused before the body of
        an ``Expect: 100-continue``): after the replies before it, then the connection closes.
        Nothing more is read, so an endless body costs nothing."""
        run.early = True
        run.keep_alive = False
        self.queue.append(run)
        assert self.transport is not None
        self.transport.pause_reading()
        if self.worker is None:
            self.worker = self.loop.create_task(self._serve())

    def _fail_connection(self, reply: Reply) -> None:
        """Answer a request that cannot be read (malformed, headers too large), then close."""
        if self.worker is not None or self.queue:
            # Replies before it are still due: it goes out in turn, and nothing more is read.
            self._answer_early(_Run.refused(reply, []))
            return
        self.closing = True
        self._write(reply, new_request_id().encode(), keep_alive=False, linger=True)

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

    def idle_since(self) -> float | None:
        """When the connection last did something, or None while a request is served.

        A request still being read counts as idle since its last bytes: a client that stops
        sending half-way holds the connection no longer than an idle one.
        """
        if self.worker is not None:
            return None
        return self.last_active

    def too_slow(self, now: float) -> Reply | None:
        """The 408 for a request whose head or body arrives too slowly by ``now``; None if
        none does (or a reply is being made: the deadlines bound reading, not serving)."""
        if not self.in_message or self.worker is not None or self.closing:
            return None
        config = self.config
        if self.in_head:
            if now - self.head_began <= config.header_timeout:
                return None
            detail = f"the request's headers took longer than {config.header_timeout:g}s"
        else:
            allowed = config.body_timeout + self.body_bytes / config.min_body_rate
            if now - self.body_began <= allowed:
                return None
            detail = (
                f"the request body arrived slower than {config.min_body_rate:g} bytes/s "
                f"(after the first {config.body_timeout:g}s)"
            )
        return error_reply(408, "request_read_timeout", detail)

    def time_out(self, reply: Reply) -> None:
        """Answer a request that arrives too slowly (``too_slow``'s reply), then close."""
        self.current = None  # what still arrives of it is dropped
        self._fail_connection(reply)

    def expire(self) -> None:
        """Idle too long: close, unless a request is being served."""
        self.closing = True
        if self.worker is None and self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        """Close now if no request is in progress; else after the current reply."""
        self.closing = True
        if self.worker is None and not self.in_message and self.transport is not None:
            self.transport.close()


def _method(admitted: Admitted | None) -> str:
    """What the access log names as a request's method (the parser may be on a later one)."""
    if isinstance(admitted, QueueCall):
        return admitted.method.decode("latin-1")
    return "GET" if isinstance(admitted, Upgrade) else "POST"


def _target(admitted: Admitted | None) -> str:
    """What the access log names as a request's target."""
    if isinstance(admitted, QueueCall):
        return admitted.path
    return admitted.target.decode("latin-1") if admitted is not None else ""
