"""The runner's routes of its own beside the App's endpoints.

``GET /_yurt/health`` (the App's health check, if it declares one), ``/_yurt/info``,
``/_yurt/metrics``, ``/_yurt/requests/{request_id}/logs``, ``POST {P}/cancel`` for each endpoint
path P, fal's ``GET /health`` and ``GET /openapi.json``, and the JSON 404 or 405 of a request
that matched no route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from yurt.app import ENDPOINT_ATTR, App
from yurt.metrics import registry_for, render
from yurt.runner.invoke import call, error_response, json_response
from yurt.runner.requests import REQUEST_ID
from yurt.spec import AppSpec, EndpointSpec

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from yurt.runner.metrics import RunnerCollector
    from yurt.runner.server import RunnerServer

log = structlog.get_logger("yurt.runner")


def cancel_paths(spec: AppSpec) -> list[str]:
    """``{P}/cancel`` for each endpoint path P, but not where the App has an endpoint itself."""
    wanted = {("" if ep.path == "/" else ep.path) + "/cancel" for ep in spec.endpoints}
    return sorted(wanted - spec.paths)


class YurtRoutes:
    """The handlers of the runner's own routes, over the state of ``server``."""

    def __init__(self, server: RunnerServer) -> None:
        self.server = server
        self._scrape: tuple[RunnerCollector, CollectorRegistry] | None = None  # made when scraped
        self._openapi_body: bytes | None = None

    async def cancel(self, request: web.Request) -> web.Response:
        # Not an endpoint request: served whatever the state and however busy the slots are.
        request_id = request.headers.get(REQUEST_ID, "")
        if not request_id:
            return error_response(
                400,
                "bad_request",
                f"a cancel request needs the {REQUEST_ID} header naming the request to cancel",
            )
        if not self.server.requests.cancel(request_id):
            return error_response(
                404, "not_found", f"request {request_id} is not in flight on this runner"
            )
        log.info("request_cancel_requested", request_id=request_id)
        return json_response(200, {"status": "CANCELLATION_REQUESTED", "request_id": request_id})

    async def unrouted(self, request: web.Request) -> web.Response:
        # Only what matched no route comes here: a path the App does not serve, or a method
        # its endpoint does not take.
        path = request.path
        allowed = sorted(self.server.spec.paths | set(cancel_paths(self.server.spec)))
        if path in allowed:
            sockets = {ep.path for ep in self.server.spec.endpoints if ep.is_websocket}
            takes = "GET" if path in sockets else "POST"
            what = (
                "a websocket endpoint takes GET with an upgrade"
                if takes == "GET"
                else ("endpoints take POST")
            )
            response = error_response(405, "method_not_allowed", f"{request.method} {path}: {what}")
            response.headers["allow"] = takes
            return response
        return error_response(
            404, "not_found", f"no route for {request.method} {path}; this runner serves {allowed}"
        )

    async def logs(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        entries = self.server.requests.logs(request_id, forget=request.query.get("forget") == "1")
        if entries is None:
            return error_response(
                404,
                "not_found",
                f"no logs for request {request_id}: this runner has not served it, or its logs "
                "were already fetched with forget=1 or evicted by newer requests",
            )
        return json_response(200, entries)

    async def health(self, request: web.Request) -> web.StreamResponse:
        if self.server.state == "starting" and (wait := ready_wait(request.query.get("wait"))):
            # The backend's startup poll: answered as soon as setup() settles, not a poll later.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.settled.wait(), wait)
        if self.server.state != "ready":
            return json_response(503, {"status": self.server.state})
        hc = self.server.spec.health_check
        # ``?basic=1``: liveness only, for health checks declared with call_regularly=False.
        if hc is None or hc.health_check is None or request.query.get("basic") == "1":
            return self.server.decorate(json_response(200, {"status": "ok"}))
        try:
            await asyncio.wait_for(self._check(hc), hc.health_check.timeout_seconds)
        except Exception as exc:
            log.warning("health_check_failed", error=repr(exc))
            return json_response(503, {"status": "unhealthy", "detail": repr(exc)})
        return self.server.decorate(json_response(200, {"status": "ok"}))

    async def _check(self, hc: EndpointSpec) -> None:
        """Run the user's health check endpoint; raises if it failed."""
        assert hc.health_check is not None
        if hc.style == "fastapi":
            from yurt.runner.asgi import probe

            status, body = await probe(self.server.asgi, hc.health_check.method, hc.path)
            if not 200 <= status < 300:
                raise RuntimeError(f"{hc.path} answered {status}: {body[:200]!r}")
            return
        method = getattr(self.server.instance, hc.method_name)
        body_model = self.server.bodies[hc.path]
        args = (body_model.model_validate({}),) if body_model is not None else ()
        await call(method, self.server.health_executor, *args)

    async def fal_health(self, _: web.Request) -> web.Response:
        # fal's runners answer GET /health with the App's ``health()``: ``{"version": ...}``.
        if self.server.state != "ready":
            return json_response(503, {"status": self.server.state})
        health = self.server.instance.health
        if hasattr(health, ENDPOINT_ATTR):  # an endpoint named health: not fal's hook
            return json_response(200, App.health(self.server.instance))
        try:
            return json_response(200, await call(health, self.server.health_executor))
        except Exception as exc:
            log.warning("health_failed", error=repr(exc))
            return error_response(503, "unhealthy", f"health() raised {type(exc).__name__}")

    async def openapi(self, _: web.Request) -> web.Response:
        if self._openapi_body is None:
            from yurt.openapi import document

            self._openapi_body = json.dumps(document(self.server.spec)).encode()
        return web.Response(body=self._openapi_body, content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        if self._scrape is None:
            from yurt.runner.metrics import RunnerCollector

            collector = RunnerCollector(self.server)
            self._scrape = collector, registry_for(collector)
        collector, registry = self._scrape
        if self.server.gpus is not None:
            # NVML calls block: off the loop, as for /_yurt/info.
            collector.gpus = await asyncio.to_thread(self.server.gpus.snapshot)
        body, content_type = render(registry, request.headers.get("accept", ""))
        return web.Response(body=body, headers={"content-type": content_type})

    async def info(self, _: web.Request) -> web.Response:
        gpus = []
        if self.server.gpus is not None:
            # NVML calls block: off the loop, and not on the request or health threads.
            gpus = await asyncio.to_thread(self.server.gpus.snapshot)
        return json_response(
            200,
            {
                "app_name": self.server.spec.app_name,
                "class_name": self.server.spec.class_name,
                "revision": self.server.header.revision,
                "runner_id": self.server.runner_id,
                "pid": os.getpid(),
                "state": self.server.state,
                "in_flight": self.server.in_flight,
                "peak_in_flight": self.server.peak_in_flight,
                "max_multiplexing": self.server.spec.max_multiplexing,
                "requests_total": self.server.requests_total,
                "python": self.server.header.python,
                "gpus": [g.as_dict() for g in gpus],
                "hints": self.server.hints.current,
            },
        )


MAX_READY_WAIT_S = 5.0


def ready_wait(value: str | None) -> float:
    """Seconds a starting runner's health check may wait for setup() (``?wait=S``, at most
    ``MAX_READY_WAIT_S``); 0 for none or a value that is not a positive number. Pure."""
    try:
        seconds = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return min(seconds, MAX_READY_WAIT_S) if seconds > 0 else 0.0  # NaN > 0 is false
