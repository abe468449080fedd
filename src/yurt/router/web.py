"""The router's aiohttp face: yurt's own routes, and everything the fast lane hands over.

A connection whose first request goes to yurt's own routes (``fastlane.py`` decides) is served
here for the rest of its life; its app and queue requests go to the same request core
(``core.py``) as the fast lane's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from yurt.errors import RequestError
from yurt.metrics import render
from yurt.playground import Playground
from yurt.router.admitted import Answer, Stream
from yurt.router.http import (
    MAX_HEADERS,
    Reply,
    error_reply,
    head_refusal,
    json_reply,
    new_request_id,
)
from yurt.router.tokens import TOKEN_PATHS, token_reply
from yurt.router.tunnel import Tunnel
from yurt.runner.invoke import error_page

if TYPE_CHECKING:
    from yurt.router.server import Router

ADMIN_PREFIX = "/_yurt/api/"
# aiohttp writes its own Date and Server.
_DROPPED_REPLY_HEADERS = frozenset({b"date", b"server"})


def to_response(reply: Reply, request_id: str) -> web.Response:
    """Render a ``Reply`` with the request-id headers."""
    headers: CIMultiDict[str] = CIMultiDict()
    for k, v in reply.headers:
        if k.lower() not in _DROPPED_REPLY_HEADERS:
            headers.add(k.decode("latin-1"), v.decode("latin-1"))
    headers["x-yurt-request-id"] = request_id
    headers["x-fal-request-id"] = request_id
    return web.Response(status=reply.status, body=reply.body, headers=headers)


def error_page_json(status: int, exc: BaseException | None) -> web.StreamResponse:
    """The router's answer to a request aiohttp refused itself (``JsonErrorServer``'s page)."""
    return to_response(error_reply(*error_page(status, exc)), new_request_id())


class WebFace:
    """The aiohttp request handler of the router."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.playground = Playground(router)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request."""
        # aiohttp's parser has the runner's limits but for the count, which leaves room for
        # the headers the router adds: what it forwards must pass the runner's parser.
        if len(request.raw_headers) > MAX_HEADERS:
            refusal = head_refusal(b"", request.raw_headers)
            assert refusal is not None
            response = to_response(refusal, new_request_id())
            response.force_close()
            return response
        path = request.path
        if self.router.files is not None and self.router.files.serves(path):
            return await self.router.files.handle(request)
        if path.startswith(ADMIN_PREFIX) and self.router.admin is not None:
            answer = await self.router.admin.handle(request)
            if isinstance(answer, web.StreamResponse):
                return answer
            return to_response(answer, new_request_id())
        core = self.router.core
        # The raw query: the decoded one could carry CR, LF or spaces into the request line.
        admitted = core.admit(
            request.method.encode(),
            path,
            request.raw_path.partition("?")[2],
            request.raw_headers,
            request.scheme,
            request.host,
            upgrade=_asks_upgrade(request),
        )
        if admitted is None:
            if path in TOKEN_PATHS:
                return to_response(await token_reply(self.router.gate, request), new_request_id())
            # HEAD as GET: aiohttp sends the headers and leaves the body out (RFC 9110 9.3.2).
            page = self.playground.serve(request) if request.method in ("GET", "HEAD") else None
            if page is not None:
                return page
            return to_response(self.platform(request, path), new_request_id())
        if isinstance(admitted, Reply):
            return to_response(admitted, new_request_id())
        body = b""
        if request.method == "POST":
            try:
                body = await self._read_body(request)
            except RequestError as exc:
                return _unread_body(exc, new_request_id())
        served = await core.serve(admitted, request.raw_headers, body)
        if isinstance(served, Tunnel):
            return await _splice(request, served)
        sent = await _send(request, served)
        if _asks_upgrade(request):
            # Refused: aiohttp would read on the caller's next bytes as HTTP; they are not.
            sent.force_close()
        return sent

    def platform(self, request: web.BaseRequest, path: str) -> Reply:
        """yurt's own routes under ``/_yurt/``."""
        refused = self.router.gate.own_route(path, request.raw_headers, request.remote)
        if refused is not None:
            return refused
        if path == "/_yurt/health":
            return json_reply({"status": "ok"})
        if path == "/_yurt/apps":
            return json_reply(self.router.describe())
        if path == "/_yurt/metrics":
            body, content_type = render(self.router.metrics, request.headers.get("accept", ""))
            return Reply(200, [(b"content-type", content_type.encode())], body)
        return error_reply(404, "not_found", f"no route for {request.method} {path}")

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        config = self.router.config
        limit = config.max_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise self.router.core.too_large()
        # aiohttp answers Expect only in its URL dispatcher, which this low-level server skips.
        if request.headers.get("expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
        if length == 0:
            return b""
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        # The fast lane's body deadline: each byte received pushes it back by 1/min_body_rate.
        try:
            async with asyncio.timeout_at(began + config.body_timeout) as deadline:
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise self.router.core.too_large()
                    chunks.append(chunk)
                    if length is not None and size >= length:
                        break
                    deadline.reschedule(began + config.body_timeout + size / config.min_body_rate)
        except TimeoutError:
            raise RequestError(
                f"the request body arrived slower than {config.min_body_rate:g} bytes/s "
                f"(after the first {config.body_timeout:g}s)",
                status=408,
                error_type="request_read_timeout",
            ) from None
        if length is not None and size < length:
            raise RequestError(
                f"the request body ended after {size} of its {length} bytes",
                status=400,
                error_type="bad_request",
            )
        return b"".join(chunks)


def _unread_body(exc: RequestError, request_id: str) -> web.StreamResponse:
    """The answer to a body not read to its end (too slow, too large, cut short), closing the
    connection: what is left of the body would otherwise be read as the next request."""
    response = to_response(error_reply(exc.status, exc.error_type, exc.detail), request_id)
    response.force_close()
    return response


def _asks_upgrade(request: web.BaseRequest) -> bool:
    return "upgrade" in request.headers.get("connection", "").lower() and bool(
        request.headers.get("upgrade")
    )


class _ToRunner:
    """Takes aiohttp's place as the reader of an upgraded connection: the caller's bytes go
    to the runner as they come (aiohttp's ``set_parser``, as its websockets use it)."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.tunnel.send(data)
        return False, b""

    def feed_eof(self) -> None:
        self.tunnel.writer.close()  # the caller went: so does the session


async def _splice(request: web.BaseRequest, tunnel: Tunnel) -> web.StreamResponse:
    """Send the runner's 101, then copy bytes both ways until either side ends."""
    headers: CIMultiDict[str] = CIMultiDict(
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in tunnel.headers
    )
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    transport = request.transport
    try:
        await response.prepare(request)
        if transport is None:
            return response
        request.protocol.set_parser(_ToRunner(tunnel))  # type: ignore[arg-type]
        await tunnel.pump(transport.write)
    finally:
        tunnel.close()
        if transport is not None:
            transport.close()
    return response


async def _send(request: web.BaseRequest, answer: Answer) -> web.StreamResponse:
    """Send the core's answer: a reply whole, a stream chunk by chunk."""
    assert not isinstance(answer, Tunnel)
    if not isinstance(answer, Stream):
        return to_response(*answer)
    headers: CIMultiDict[str] = CIMultiDict(
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers
    )
    headers["x-yurt-request-id"] = answer.request_id
    headers["x-fal-request-id"] = answer.request_id
    response = web.StreamResponse(status=answer.status, headers=headers)
    ended = False
    try:
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            async for chunk, last in answer.chunks:
                if last:
                    await response.write_eof(chunk)
                    ended = True
                    break
                await response.write(chunk)
    finally:
        await answer.chunks.aclose()
    if not ended and request.transport is not None:
        # Cut short (the router stops, the runner failed): close without the last chunk, so
        # that the client cannot take the stream for a complete one.
        request.transport.close()
    return response
