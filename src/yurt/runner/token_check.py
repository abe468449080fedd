"""The runner's token check as aiohttp middleware (the token itself: ``yurt.runner.token``)."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from yurt.runner.token import RUNNER_TOKEN_HEADER, allowed


def token_middleware(token: str) -> Middleware:
    """An aiohttp middleware answering 401 to calls without the runner's token."""
    denied = json.dumps(
        {
            "detail": "this runner is called through yurt's router only; call the app at the "
            "router's URL",
            "error_type": "unauthorized",
        }
    ).encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not allowed(token, request.path, request.headers.get(RUNNER_TOKEN_HEADER)):
            return web.Response(
                status=401,
                body=denied,
                content_type="application/json",
                headers={"x-yurt-error-type": "unauthorized", "x-fal-error-type": "unauthorized"},
            )
        if RUNNER_TOKEN_HEADER in request.headers:
            # The app's code sees the caller's headers, never the runner's token.
            headers = CIMultiDict(request.headers)
            del headers[RUNNER_TOKEN_HEADER]
            request = request.clone(headers=headers)
        return await handler(request)

    return check
