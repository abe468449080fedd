"""The runner's token check in each route's handler (the token: ``yurt.runner.token``).

Set once per route, not aiohttp middleware: middleware builds its chain on every request, which
cost the runner several microseconds a request.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from yurt.runner.token import RUNNER_TOKEN_HEADER, allowed

Refusal = Callable[[web.Request], web.Response | None]


def refusal(token: str | None) -> Refusal | None:
    """What a handler asks first: the 401 for a call without ``token``, or None to serve it;
    None itself when there is no token (a runner started by hand)."""
    if not token:
        return None
    expected = token.encode()
    denied = json.dumps(
        {
            "detail": "this runner is called through yurt's router only; call the app at the "
            "router's URL",
            "error_type": "unauthorized",
        }
    ).encode()

    def refuse(request: web.Request) -> web.Response | None:
        given = request.headers.get(RUNNER_TOKEN_HEADER)
        # The router's call, the common case, first: no path to look at.
        if given is not None and hmac.compare_digest(given.encode(), expected):
            return None
        if allowed(token, request.path, given):
            return None
        return web.Response(
            status=401,
            body=denied,
            content_type="application/json",
            headers={"x-yurt-error-type": "unauthorized", "x-fal-error-type": "unauthorized"},
        )

    # The app's code never sees the header: requests.py and asgi.py leave it out of what they
    # hand the app (a clone of the request here would cost every request).
    return refuse


def guard(token: str | None) -> Callable[[Handler], Handler]:
    """What wraps a route's handler: ``refusal``'s check, then the handler. (An endpoint's
    handler makes the check itself: one coroutine fewer on every request.)"""
    refuse = refusal(token)
    if refuse is None:
        return lambda handler: handler

    def wrap(handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            refused = refuse(request)
            if refused is not None:
                return refused
            return await handler(request)

        return check

    return wrap
