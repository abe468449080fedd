"""The runner's token check around each route's handler (the token: ``yurt.runner.token``).

A wrapper set once per route, not aiohttp middleware: middleware builds its chain on every
request, which cost the runner several microseconds a request.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from yurt.runner.token import RUNNER_TOKEN_HEADER, allowed


def guard(token: str | None) -> Callable[[Handler], Handler]:
    """What wraps each route's handler: a 401 to calls without ``token``; with no token (a
    runner started by hand), the handler as it is."""
    if not token:
        return lambda handler: handler
    denied = json.dumps(
        {
            "detail": "this runner is called through yurt's router only; call the app at the "
            "router's URL",
            "error_type": "unauthorized",
        }
    ).encode()

    expected = token.encode()

    def wrap(handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            given = request.headers.get(RUNNER_TOKEN_HEADER)
            # The router's call, the common case, first: no path to look at.
            shown = given is not None and hmac.compare_digest(given.encode(), expected)
            if not shown and not allowed(token, request.path, given):
                return web.Response(
                    status=401,
                    body=denied,
                    content_type="application/json",
                    headers={
                        "x-yurt-error-type": "unauthorized",
                        "x-fal-error-type": "unauthorized",
                    },
                )
            # The app's code never sees the header: requests.py and asgi.py leave it out of
            # what they hand the app (a clone of the request here would cost every request).
            return await handler(request)

        return check

    return wrap
