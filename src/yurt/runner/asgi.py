"""Calling an ASGI app (the FastAPI app of fal-style endpoints) from the runner's aiohttp server.

An aiohttp request becomes an ASGI ``http`` or ``websocket`` scope; the app's messages become
aiohttp's response. A reply the app sends in one piece goes out as one ``web.Response``; a reply
in several pieces (``StreamingResponse``, server-sent events) is written chunk by chunk as the
app sends each, unbuffered. When the caller has gone, the next write fails with an ``OSError``
inside the app's ``send``, which ends the stream and closes its generator (starlette's rule for
ASGI spec 2.4). A websocket is accepted (``101``) only when the app accepts it; closed before
that, the caller gets a 403, as ASGI servers answer.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from yurt.runner.invoke import begin_reply, error_response
from yurt.runner.token import RUNNER_TOKEN_HEADER

log = structlog.get_logger("yurt.runner")

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
# Headers aiohttp writes itself from the body it is given.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_TOKEN = RUNNER_TOKEN_HEADER.encode()
_ASGI = {"version": "3.0", "spec_version": "2.4"}
# Apps still running after their reply went out (background tasks), kept from collection.
_after_reply: set[asyncio.Future[None]] = set()


def scope_for(request: web.BaseRequest, kind: str) -> dict[str, Any]:
    """The ASGI scope of an aiohttp request."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": _ASGI,
        "http_version": f"{request.version.major}.{request.version.minor}",
        "scheme": "ws" if kind == "websocket" else request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        # Less the runner's token (runner/token.py): the app sees the caller's headers only.
        "headers": [(k.lower(), v) for k, v in request.raw_headers if k.lower() != _TOKEN],
        "client": tuple(peer[:2]) if peer else None,
        "server": tuple(sock[:2]) if sock else None,
        "state": {},
    }
    if kind == "http":
        scope["method"] = request.method
    else:
        protocols = request.headers.get("sec-websocket-protocol", "")
        scope["subprotocols"] = [p.strip() for p in protocols.split(",") if p.strip()]
    return scope


class HttpExchange:
    """One HTTP request through the app: ``run()`` returns the reply to hand to aiohttp."""

    def __init__(self, app: ASGIApp, request: web.Request) -> None:
        self.app, self.request = app, request
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.stream: web.StreamResponse | None = None  # once the reply went out in pieces
        self.single: web.Response | None = None
        # Resolved once the reply is complete: receive() then says disconnect.
        self.replied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.body_read = False

    def began(self) -> web.StreamResponse | None:
        """The reply, if part of it is already on the wire."""
        return self.stream

    async def run(self) -> web.StreamResponse:
        # The app may go on after its reply is complete: FastAPI runs an endpoint's
        # BackgroundTasks then, and the caller must not wait for them.
        call = asyncio.ensure_future(self._call())
        try:
            await asyncio.wait((call, self.replied), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if call.done():
            call.result()  # what the app raised before any reply
        else:
            _after_reply.add(call)
            call.add_done_callback(_after_reply.discard)
        if self.single is not None:
            return self.single
        if self.stream is None:
            raise RuntimeError("the ASGI app returned without a reply")
        return self.stream

    async def _call(self) -> None:
        try:
            await self.app(scope_for(self.request, "http"), self.receive, self.send)
        except Exception as exc:
            if self.stream is None and not self.replied.done():
                raise  # nothing was sent: the runner answers for the app
            if _is_disconnect(exc):
                log.info("stream_caller_gone", path=self.request.path)
                return
            # Starlette re-raises an unhandled error after its handler answered it (its
            # ServerErrorMiddleware), and a background task may fail after the reply: the
            # traceback belongs in the runner's log.
            log.exception("endpoint_failed", path=self.request.path)

    async def receive(self) -> Message:
        if not self.body_read:
            content = self.request.content
            chunk = await content.readany() if not content.at_eof() else b""
            self.body_read = content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not self.body_read}
        # After the body, the next message is the end of the exchange.
        await asyncio.shield(self.replied)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            raw = message.get("headers", [])
            self.headers = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in raw
                if k.lower() not in _FRAMING
            ]
            if _streamed(self.status, raw):
                # No length: a stream (a StreamingResponse, say). Its head goes now, not with
                # its first chunk, however late that is: the caller sees the stream open.
                await self._begin_stream()
        elif kind == "http.response.body":
            await self._body(message.get("body", b""), message.get("more_body", False))

    async def _body(self, body: bytes, more: bool) -> None:
        if self.stream is None and not more:
            self.single = web.Response(status=self.status, body=body)
            self._headers_onto(self.single)
            self.replied.set_result(None)
            return
        if self.stream is None:
            await self._begin_stream()
        assert self.stream is not None
        if body:
            # Raises ClientConnectionResetError (an OSError) once the caller has gone.
            await self.stream.write(body)
        if not more:
            await self.stream.write_eof()
            self.replied.set_result(None)

    async def _begin_stream(self) -> None:
        self.stream = web.StreamResponse(status=self.status)
        self._headers_onto(self.stream)
        await begin_reply(self.request, self.stream)

    def _headers_onto(self, response: web.StreamResponse) -> None:
        for name, value in self.headers:
            response.headers.add(name, value)


def _streamed(status: int, headers: Any) -> bool:
    """Whether a reply that starts with ``status`` and ``headers`` is a stream: it has a body
    (not 1xx, 204 or 304) and no ``content-length`` (every plain starlette reply has one)."""
    if status < 200 or status in (204, 304):
        return False
    return not any(name.lower() == b"content-length" for name, _ in headers)


def _refused() -> web.Response:
    # ASGI servers answer 403 to a websocket closed before it was accepted.
    detail = "the websocket endpoint closed the connection without accepting it"
    return error_response(403, "websocket_refused", detail)


def _is_disconnect(exc: Exception) -> bool:
    """Whether ``exc`` says the caller went away mid-reply (a failed write, or starlette's
    ``ClientDisconnect`` made of one)."""
    requests = sys.modules.get("starlette.requests")
    return isinstance(exc, OSError) or (
        requests is not None and isinstance(exc, requests.ClientDisconnect)
    )


class WebSocketExchange:
    """One websocket session through the app: ``run()`` returns when it is over."""

    def __init__(self, app: ASGIApp, request: web.Request) -> None:
        self.app, self.request = app, request
        self.ws: web.WebSocketResponse | None = None
        self.refused: web.Response | None = None
        self.connected = False

    async def run(self) -> web.StreamResponse:
        try:
            await self.app(scope_for(self.request, "websocket"), self.receive, self.send)
        except Exception:
            log.exception("websocket_endpoint_failed", path=self.request.path)
            if self.ws is not None and not self.ws.closed:
                await self.ws.close(code=1011, message=b"endpoint failed")
            if self.ws is None:
                detail = "the websocket endpoint failed before accepting the connection"
                return error_response(500, "endpoint_error", detail)
        if self.ws is None:
            return self.refused or _refused()
        if not self.ws.closed:
            await self.ws.close()
        return self.ws

    def began(self) -> web.StreamResponse | None:
        """The websocket, once accepted."""
        return self.ws

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.ws is None:
            raise RuntimeError("websocket.receive before websocket.accept")
        msg = await self.ws.receive()
        if msg.type == WSMsgType.TEXT:
            return {"type": "websocket.receive", "text": msg.data}
        if msg.type == WSMsgType.BINARY:
            return {"type": "websocket.receive", "bytes": msg.data}
        code = self.ws.close_code or 1005
        return {"type": "websocket.disconnect", "code": code}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            sub = message.get("subprotocol")
            self.ws = web.WebSocketResponse(protocols=(sub,) if sub else (), autoping=True)
            for name, value in message.get("headers", []):
                self.ws.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await begin_reply(self.request, self.ws)
        elif kind == "websocket.send":
            ws = self._open()
            if message.get("bytes") is not None:
                await ws.send_bytes(message["bytes"])
            else:
                await ws.send_str(message.get("text") or "")
        elif kind == "websocket.close":
            if self.ws is None:
                self.refused = _refused()
                return
            reason = (message.get("reason") or "").encode()
            await self.ws.close(code=message.get("code", 1000), message=reason)

    def _open(self) -> web.WebSocketResponse:
        if self.ws is None or self.ws.closed:
            # Starlette turns this into WebSocketDisconnect for the endpoint.
            raise OSError("the websocket is closed")
        return self.ws


async def probe(app: ASGIApp, method: str, path: str) -> tuple[int, bytes]:
    """Call ``method path`` on the app in-process with an empty body: (status, body)."""
    scope: Message = {
        "type": "http",
        "asgi": _ASGI,
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": None,
        "server": None,
        "state": {},
    }
    sent = False
    status, body = 500, b""
    finished = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")
            if not message.get("more_body", False):
                finished.set()

    try:
        await app(scope, receive, send)
    except Exception:
        if not finished.is_set():
            raise
    return status, body
