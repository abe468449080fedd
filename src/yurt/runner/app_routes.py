"""The runner's routes to the App's own endpoints: one handler per endpoint, on the hot path.

A handler admits the request (the runner is ready, a websocket endpoint gets an upgrade, a
slot is free), calls the endpoint (runner/endpoints.py), and answers in JSON whatever went
wrong, with the number of log lines the request left and the runner's hints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from yurt.runner.endpoints import cancelled
from yurt.runner.invoke import BEGAN, error_page, error_response
from yurt.runner.token_check import Refusal, refusal
from yurt.spec import AppSpec, EndpointSpec, endpoint_body_model

if TYPE_CHECKING:
    from yurt.app import App
    from yurt.runner.server import RunnerServer

log = structlog.get_logger("yurt.runner")


def add_endpoints(
    server: RunnerServer, app: web.Application, g: Callable[[Handler], Handler]
) -> None:
    """Route each of the App's endpoints to its handler, and fal's ``GET /health`` and
    ``GET /openapi.json`` beside them (``g``: the token guard)."""
    spec = server.spec
    for ep in spec.endpoints:
        if ep.style == "model":
            func = getattr(server.cls, ep.method_name)
            server.bodies[ep.path] = endpoint_body_model(func, ep.method_name)
        handler = endpoint_handler(server, ep, refusal(server.token))
        if ep.is_websocket:
            app.router.add_get(ep.path, handler)
            continue
        app.router.add_post(ep.path, handler)
        if ep.health_check is not None and ep.health_check.method != "POST":
            app.router.add_route(ep.health_check.method, ep.path, handler)
    if "/health" not in get_paths(spec):
        app.router.add_get("/health", server.routes.fal_health)
    app.router.add_get("/openapi.json", g(server.routes.openapi))


def get_paths(spec: AppSpec) -> set[str]:
    """Paths where an endpoint answers GET (a websocket, a GET health check)."""
    return {
        ep.path
        for ep in spec.endpoints
        if ep.is_websocket or (ep.health_check is not None and ep.health_check.method == "GET")
    }


def endpoint_handler(server: RunnerServer, ep: EndpointSpec, refuse: Refusal | None) -> Any:
    """The aiohttp handler of endpoint ``ep``: admission (state, upgrade, slots), the call, and
    its answer decorated with the log count and the runner's hints."""
    invoke = server.calls.invoker(ep, server.bodies.get(ep.path))

    async def handle(request: web.Request) -> web.StreamResponse:
        # Every route but the health check wants the router's token (token_check.py).
        if refuse is not None and (refused := refuse(request)) is not None:
            return refused
        t0 = time.monotonic()
        try:
            response = await serve(request)
        except asyncio.CancelledError:
            server.stats.served(ep.path, 499, time.monotonic() - t0)  # the caller went away
            raise
        except web.HTTPException as exc:  # aiohttp's own (a body past client_max_size)
            detail = exc.text or exc.reason  # "Maximum request body size ... exceeded"
            response = error_response(exc.status, _error_type(exc.status), detail)
        except Exception as exc:
            # Past the endpoint's own handling (a validator raising TypeError, say): still
            # an answer in JSON, never aiohttp's text page.
            log.exception("request_failed", path=request.path)
            response = error_response(500, "runner_error", f"{type(exc).__name__}: {exc}")
        response = _began_or(request, response)
        server.stats.served(ep.path, response.status, time.monotonic() - t0)
        return response

    async def serve(request: web.Request) -> web.StreamResponse:
        if server.state != "ready":
            return server.decorate(
                error_response(503, "runner_unavailable", f"runner is {server.state}")
            )
        if ep.is_websocket and not _is_upgrade(request):
            detail = f"{ep.path} is a websocket endpoint: connect with a websocket upgrade"
            return error_response(400, "bad_request", detail)
        if server.in_flight >= server.spec.max_multiplexing:
            detail = f"runner is at max_multiplexing={server.spec.max_multiplexing}"
            return server.decorate(error_response(429, "runner_busy", detail))
        server.in_flight += 1
        server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
        server.requests_total += 1
        active = server.requests.begin(request.headers, ep.path)
        try:
            response = await invoke(request, active)
        finally:
            server.in_flight -= 1
            server.requests.finish(active)
        # Whatever the call ended with, a request whose cancellation was acknowledged
        # answers 499: that is what the canceller was promised (unless its reply began).
        if active.cancelled and not response.prepared:
            response = cancelled(active)
        server.hints.refresh()
        return server.decorate(response, active.logs.count)

    return handle


def _error_type(status: int) -> str:
    """``request_too_large`` for 413: the phrase of the status, in snake case."""
    phrase = HTTPStatus(status).phrase if status in _STATUSES else f"http_{status}"
    return phrase.lower().replace(" ", "_").replace("-", "_")


_STATUSES = frozenset(s.value for s in HTTPStatus)


def error_page_response(status: int, exc: BaseException | None) -> web.StreamResponse:
    """aiohttp's error page for ``status``, as a JSON error."""
    return error_response(*error_page(status, exc))


def _began_or(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """``response``, unless another reply already went out (a stream cut short by a cancel or
    by its generator raising): then that one, with the connection aborted, so that the caller
    cannot take the cut stream for a whole one and no second reply follows the first."""
    # Most requests hold nothing: no lookup (a missing key costs a KeyError raised and caught).
    began: web.StreamResponse | None = request.get(BEGAN) if len(request) else None
    if began is None or began is response:
        return response
    log.warning("stream_cut_short", path=request.path, instead=response.status)
    if request.transport is not None:
        request.transport.abort()
    return began


def fal_app(instance: App, spec: AppSpec) -> Any:
    """The FastAPI app of the App's fal-style endpoints; None if it has none."""
    fal_style = [ep for ep in spec.endpoints if ep.style == "fastapi"]
    if not fal_style:
        return None
    # Only apps with such endpoints pay for importing FastAPI.
    from yurt.runner.fal import build_endpoint_app

    return build_endpoint_app(instance, fal_style)


def _is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"
