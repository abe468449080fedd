"""The runner's token check as aiohttp middleware (the token itself: ``yurt.runner.token``)."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

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
        # The app's code never sees the header: requests.py and asgi.py leave it out of what
        # they hand the app (a clone of the request here would cost every request dearly).
        return await handler(request)

    return check
