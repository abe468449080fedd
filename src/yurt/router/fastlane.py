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

This module parses; ``fastlane_serve.py`` answers what was read, in order. A connection's state
is two fields, ``phase`` and ``mode`` (``fastlane_state.py`` draws both machines); each request
is an ``Exchange`` (``fastlane_exchange.py``).
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools

from yurt.router.fastlane_exchange import HELD, RELAYING, Exchange
from yurt.router.fastlane_serve import CONTINUE, Lane
from yurt.router.fastlane_state import (
    BODY,
    CLOSING,
    DONE,
    HAND_OVER,
    HEAD,
    IDLE,
    LINGER,
    OPEN,
    UPGRADING,
    read_timeout,
)
from yurt.router.flight import Flight
from yurt.router.http import (
    MAX_FIELD_SIZE,
    MAX_HEADERS,
    MAX_TARGET_SIZE,
    Reply,
    error_reply,
    head_refusal,
    new_request_id,
)
from yurt.router.options import TIMEOUT_HEADERS

# The headers on_header notes.
_NOTED = frozenset((b"content-length", b"expect", b"host", b"authorization", *TIMEOUT_HEADERS))
# A request line and headers past this many bytes get 431 (aiohttp's own limits are per line).
MAX_HEAD_BYTES = 64 * 1024
# No field or target of a head read whole in this many bytes can be over its limit.
_WITHIN_LIMITS = min(MAX_FIELD_SIZE, MAX_TARGET_SIZE)
_HTTP11 = b" HTTP/1.1"  # how a request line of HTTP/1.1 ends


class FrontProtocol(Lane):
    """One client connection, in the fast lane until it is handed to aiohttp."""

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._close_mode()
        serving = self.serving
        if self.worker is None or serving is None:
            return
        if serving.stage is HELD or serving.stage is RELAYING or isinstance(self.worker, Flight):
            # Waiting for a runner, only watching, or relaying (a flight's stream whose head is
            # held, too): nobody is left for it.
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.mode is not OPEN and self._set_aside(data):
            return
        phase = self.phase
        if phase is HEAD or phase is BODY:
            raw = self.raw
            if isinstance(raw, bytearray):
                raw += data
            elif raw is not None:  # the read it began in, as it came: now grown in place
                self.raw = bytearray(raw) + data
        else:
            self.raw = data  # kept as it came: most requests never need it
            if phase is DONE:
                self.phase = phase = IDLE
        if phase is HEAD:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # Past the upgrade request's head the bytes are the new protocol's: kept for the
            # session if the core took it (else on_headers_complete handed the connection over).
            if self.mode is not HAND_OVER:
                self.spliced = bytearray(data[exc.args[0] :] if exc.args else b"")
                if self.mode is OPEN:
                    self.mode = UPGRADING
        except httptools.HttpParserError as exc:
            if self.mode is not HAND_OVER:
                self._fail_connection(error_reply(400, "bad_request", f"malformed HTTP: {exc}"))
                return
        if self.phase is HEAD and self.head_bytes > MAX_HEAD_BYTES and self._reads_requests():
            detail = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
            self._fail_connection(error_reply(431, "request_header_fields_too_large", detail))
            return
        if self.mode is HAND_OVER:
            assert self.transport is not None
            if self.worker is None:
                self._hand_over()
            else:
                # Replies must keep request order: hand over once the fast lane is done.
                self.transport.pause_reading()

    def _set_aside(self, data: bytes) -> bool:
        """Bytes that are not parsed here (a tunnel's, an upgrade's, dropped): True if taken."""
        if self.tunnel is not None:
            self.tunnel.send(data)
        elif self.spliced is not None:
            self.spliced += data
        elif self.mode is LINGER:
            self.linger_left -= len(data)
            if self.linger_left <= 0 and self.transport is not None:
                self.transport.close()
        else:
            return False
        return True

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.phase is DONE and self.mode is not HAND_OVER:
            self.raw = None  # began mid-read: its exact bytes are unknown
        self.phase, self.head_bytes = HEAD, 0
        self.head_began = self.last_active
        self.url = b""
        self.headers = []
        self.content_length = b"0"
        self.expect = b""
        self.host = b""
        self.timeout_header = None
        self.authorization = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        # The headers the fast lane itself reads, noted in passing rather than searched for.
        lname = name.lower()
        if lname not in _NOTED:
            return
        if lname == b"content-length":
            self.content_length = value
        elif lname == b"expect":
            self.expect = value
        elif lname == b"host":
            self.host = value
        elif lname == b"authorization":
            if self.authorization is None:
                self.authorization = value
        elif lname in TIMEOUT_HEADERS and self.timeout_header is None:
            self.timeout_header = (lname, value)

    def on_headers_complete(self) -> None:
        self.phase = BODY
        self.body_began, self.body_bytes = self.last_active, 0
        if self.mode is not OPEN:
            return
        # Before anything is decided, hand-overs included: aiohttp's parser would refuse it too,
        # in text. A head read whole in fewer bytes than a field may have is within the limits
        # but for the count.
        raw = self.raw
        if (raw is None or len(raw) > _WITHIN_LIMITS or len(self.headers) > MAX_HEADERS) and (
            refusal := head_refusal(self.url, self.headers)
        ) is not None:
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
            query.decode("latin-1") if query else "",
            self.headers,
            self.scheme,
            self.host.decode("latin-1"),
            self.timeout_header,
            self.authorization,
            upgrade=upgrade,
        )
        if admitted is None:  # yurt's own routes, or an upgrade: the aiohttp face serves them
            if self.raw is None:
                # Answered in turn, after the replies it was pipelined behind; then we close.
                reply = error_reply(400, "bad_request", "pipelined request needs a new connection")
                self.current = Exchange.refused(reply, self.headers)
                self.current.keep_alive = False
                self.current.http10 = self.parser.get_http_version() == "1.0"
            else:
                self.mode = HAND_OVER
            return
        if isinstance(admitted, Reply):
            exchange = Exchange.refused(admitted, self.headers)
        else:
            exchange = Exchange(admitted, self.headers)
        exchange.keep_alive = not upgrade  # after an upgrade request comes the other protocol
        # The version, from the request line where the read has it (get_http_version formats
        # a string).
        if not (
            raw is not None and (end := raw.find(b"\r\n")) >= 9 and raw.startswith(_HTTP11, end - 9)
        ):
            exchange.http10 = self.parser.get_http_version() == "1.0"
        if self.expect or len(self.content_length) > self.short_length:
            self._expect_body(exchange)  # else nothing to do: no Expect, and within the limit
        self.current = exchange
        self.raw = None  # the fast lane keeps no second copy of the body

    def _expect_body(self, exchange: Exchange) -> None:
        try:
            size = int(self.content_length)
        except ValueError:
            size = 0
        if size > self.config.max_body_size:
            self._check_size(exchange, size)
        if exchange.early or not self.expect or self.expect.lower() != b"100-continue":
            return
        if exchange.error is not None:
            # Refused before its body: the final answer instead of 100 (RFC 9110 10.1.1).
            self._answer_early(exchange)
        elif self.worker is None and not self.queue:
            assert self.transport is not None
            self.transport.write(CONTINUE)
        else:
            # Earlier replies are still being written: it goes out after them.
            self.continue_for = exchange

    def on_body(self, body: bytes) -> None:
        size = len(body)
        self.body_bytes += size
        exchange = self.current
        if exchange is None or exchange.early:
            return
        exchange.size += size
        if exchange.error is None and exchange.size <= self.max_body_size:
            exchange.body.append(body)  # the common case
            return
        if exchange.error is not None:
            # Already refused (an unknown app, a bad header): read past its body only up to
            # the limit, then answer without reading on.
            if exchange.size > self.config.max_body_size:
                self._answer_early(exchange)
            return
        self._check_size(exchange, exchange.size)  # past the limit: refused, the body dropped

    def on_message_complete(self) -> None:
        self.phase = DONE
        exchange, self.current = self.current, None
        transport = self.transport
        if exchange is None or exchange.early or transport is None or transport.is_closing():
            return  # nobody to answer; a request read while the router stops is still served
        exchange.keep_alive = exchange.keep_alive and self.parser.should_keep_alive()
        if self.worker is None:
            self._start(exchange)
        else:
            self.queue.append(exchange)

    # -- helpers ---------------------------------------------------------------------------

    def _check_size(self, exchange: Exchange, size: int) -> None:
        if size > self.config.max_body_size and exchange.error is None:
            exc = self.core.too_large()
            exchange.error = error_reply(exc.status, exc.error_type, exc.detail)
            exchange.body = []
            self._answer_early(exchange)

    def _answer_early(self, exchange: Exchange) -> None:
        """Answer ``exchange`` without reading its body (too large, or refused before the body
        of an ``Expect: 100-continue``): after the replies before it, then the connection
        closes. Nothing more is read, so an endless body costs nothing."""
        exchange.early = True
        exchange.keep_alive = False
        self.queue.append(exchange)
        assert self.transport is not None
        self.transport.pause_reading()
        if self.worker is None:
            self.worker = self.loop.create_task(self._serve())

    def _fail_connection(self, reply: Reply) -> None:
        """Answer a request that cannot be read (malformed, headers too large), then close."""
        if self.worker is not None or self.queue:
            # Replies before it are still due: it goes out in turn, and nothing more is read.
            self._answer_early(Exchange.refused(reply, []))
            return
        self._close_mode()
        self._write(reply, new_request_id().encode(), keep_alive=False, linger=True)

    # -- the router's sweeps ---------------------------------------------------------------

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
        if self.worker is not None or self.mode is CLOSING or self.mode is LINGER:
            return None
        config = self.config
        limits = (config.header_timeout, config.body_timeout, config.min_body_rate)
        return read_timeout(
            self.phase, now, self.head_began, self.body_began, self.body_bytes, limits
        )

    def time_out(self, reply: Reply) -> None:
        """Answer a request that arrives too slowly (``too_slow``'s reply), then close."""
        self.current = None  # what still arrives of it is dropped
        self._fail_connection(reply)

    def expire(self) -> None:
        """Idle too long: close, unless a request is being served."""
        self._close_mode()
        if self.worker is None and self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        """Close now if no request is in progress; else after the current reply."""
        self._close_mode()
        phase = self.phase
        if self.worker is None and phase is not HEAD and phase is not BODY and self.transport:
            self.transport.close()
