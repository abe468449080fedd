"""The router's aiohttp face: yurt's own routes, and everything the fast lane hands over.

A connection whose first request is not a sync run (``fastlane.py`` decides) is served here for
the rest of its life, sync runs included.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from yurt.errors import RequestError
from yurt.metrics import render
from yurt.openapi import document as openapi_document
from yurt.openapi import document_app
from yurt.queue.api import SSE_HEADERS, EventStream, QueueApi, QueueCall
from yurt.queue.routing import TIMEOUT, RoutingError, parse_start_timeout
from yurt.router.http import (
    MAX_HEADERS,
    Reply,
    error_reply,
    head_refusal,
    invalid_reply,
    json_reply,
    new_request_id,
)
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


def _sse_headers(request_id: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in SSE_HEADERS
    )
    headers["x-yurt-request-id"] = request_id
    headers["x-fal-request-id"] = request_id
    return headers


def error_page_json(status: int, exc: BaseException | None) -> web.StreamResponse:
    """The router's answer to a request aiohttp refused itself (``JsonErrorServer``'s page)."""
    return to_response(error_reply(*error_page(status, exc)), new_request_id())


class WebFace:
    """The aiohttp request handler of the router."""

    def __init__(self, router: Router) -> None:
        self.router = router

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
        if path.startswith("/queue/") and self.router.queue_api is not None:
            return await self._queue(request, self.router.queue_api)
        if self.router.files is not None and self.router.files.serves(path):
            return await self.router.files.handle(request)
        request_id = new_request_id()
        if path.startswith(ADMIN_PREFIX) and self.router.admin is not None:
            answer = await self.router.admin.handle(request)
            if isinstance(answer, web.StreamResponse):
                return answer
            return to_response(answer, request_id)
        if path.startswith("/_yurt/"):
            return to_response(self.platform(request, path), request_id)
        if request.method == "GET" and (doc := self._openapi(path)) is not None:
            return to_response(doc, request_id)
        resolved = self.router.resolve(path)
        if isinstance(resolved, Reply):
            return to_response(resolved, request_id)
        route, endpoint = resolved
        if request.method != "POST":
            reply = error_reply(
                405, "method_not_allowed", f"{request.method} {path}: endpoints take POST"
            )
            return to_response(reply, request_id)
        try:
            body = await self._read_body(request)
        except RequestError as exc:
            return _unread_body(exc, request_id)
        # The raw query: the decoded one could carry CR, LF or spaces into the request line.
        query = request.raw_path.partition("?")[2]
        target = endpoint if not query else f"{endpoint}?{query}"
        start_timeout = None
        if found := next(((n, request.headers[n]) for n in TIMEOUT if n in request.headers), None):
            try:
                start_timeout = parse_start_timeout(*found)
            except RoutingError as exc:
                return to_response(invalid_reply(exc.detail()), request_id)
        reply = await self.router.forward(
            route, target.encode(), request.raw_headers, body, request_id.encode(), start_timeout
        )
        return to_response(reply, request_id)

    async def _queue(self, request: web.BaseRequest, api: QueueApi) -> web.StreamResponse:
        body = b""
        if request.method == "POST":
            try:
                body = await self._read_body(request)
            except RequestError as exc:
                return _unread_body(exc, new_request_id())
        call = QueueCall(
            request.method.encode(),
            request.path,
            request.raw_path.partition("?")[2],
            request.raw_headers,
            body,
            f"{request.scheme}://{request.host}",
        )
        served = await api.serve(call)
        if not isinstance(served, EventStream):
            return to_response(*served)
        response = web.StreamResponse(headers=_sse_headers(served.request_id))
        await response.prepare(request)
        ended = False
        with contextlib.suppress(ConnectionError):
            async for chunk, last in served.chunks:
                if last:
                    await response.write_eof(chunk)
                    ended = True
                    break
                await response.write(chunk)
        if not ended and request.transport is not None:
            # Cut short (the router stops): close without the last chunk, so that the client
            # cannot take the stream for a complete one.
            request.transport.close()
        return response

    def _openapi(self, path: str) -> Reply | None:
        """``GET /{owner}/{app}/openapi.json``: the app's OpenAPI document, from its spec alone
        (no runner needed); None for any other path."""
        app_id = document_app(path)
        route = self.router.routes.get(app_id) if app_id is not None else None
        return json_reply(openapi_document(route.spec)) if route is not None else None

    def platform(self, request: web.BaseRequest, path: str) -> Reply:
        """yurt's own routes under ``/_yurt/``."""
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
            raise self.router.too_large()
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
                        raise self.router.too_large()
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
