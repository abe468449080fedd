"""The runner's HTTP server: endpoints, ``/_yurt/health``, ``/_yurt/info``, graceful drain.

Besides the App's endpoints it serves, for each endpoint path P, ``POST {P}/cancel`` (for "/"
that is "/cancel") unless the App has an endpoint of its own at that path, and
``GET /_yurt/requests/{request_id}/logs`` for what a request printed and logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal, get_args

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from yurt import heap
from yurt.app import ENDPOINT_ATTR, App
from yurt.metrics import registry_for, render
from yurt.packaging import PayloadHeader
from yurt.runner.endpoints import Calls, cancelled
from yurt.runner.gpus import GpuMonitor
from yurt.runner.hints import HINTS_HEADER, RunnerHints
from yurt.runner.invoke import (
    BEGAN,
    JsonErrorServer,
    call,
    error_page,
    error_response,
    json_response,
)
from yurt.runner.requests import (
    MAX_FIELD_SIZE,
    MAX_HEADERS,
    MAX_LINE_SIZE,
    REQUEST_ID,
    RequestRegistry,
)
from yurt.runner.stats import RunnerStats
from yurt.runner.token_check import Refusal, guard, refusal
from yurt.spec import (
    TEARDOWN_SLACK_S,
    AppSpec,
    EndpointSpec,
    build_spec,
    endpoint_body_model,
)

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from yurt.runner.metrics import RunnerCollector

log = structlog.get_logger("yurt.runner")

State = Literal["starting", "ready", "draining", "failed"]
LOG_COUNT_HEADER = "x-yurt-log-count"


def cancel_paths(spec: AppSpec) -> list[str]:
    """``{P}/cancel`` for each endpoint path P, but not where the App has an endpoint itself."""
    wanted = {("" if ep.path == "/" else ep.path) + "/cancel" for ep in spec.endpoints}
    return sorted(wanted - spec.paths)


class RunnerServer:
    """Serves one App instance. ``start()`` opens the port, ``run_setup()`` makes it ready."""

    STATES: tuple[State, ...] = get_args(State)

    def __init__(
        self,
        header: PayloadHeader,
        cls: type[App],
        *,
        host: str,
        port: int,
        runner_id: str = "",
        fd: int = -1,
        kill_after: float = TEARDOWN_SLACK_S,
        settle_heap: bool = False,
        token: str | None = None,
    ) -> None:
        self.header = header
        self.token = token  # what the router shows (runner/token.py); None: no check
        self.cls = cls
        self.spec: AppSpec = build_spec(cls)
        self.host, self.port, self.runner_id = host, port, runner_id
        self.fd = fd  # an inherited socket bound to the port, or -1 to bind it here
        self.kill_after = kill_after  # the supervisor's SIGKILL comes this long after grace
        # Whether setup() is followed by heap.settle(): only when the runner owns its process.
        self.settle_heap = settle_heap
        self.state: State = "starting"
        self.instance: App = cls()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.requests_total = 0
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.setup_seconds: float | None = None
        self.stats = RunnerStats()
        self._scrape: tuple[RunnerCollector, CollectorRegistry] | None = None  # made when scraped
        # One thread per request slot; health checks get their own so a busy runner still
        # answers them.
        self._executor = ThreadPoolExecutor(self.spec.max_multiplexing, "yurt-endpoint")
        self._health_executor = ThreadPoolExecutor(1, "yurt-health")
        self._bodies: dict[str, type[BaseModel] | None] = {}
        # The FastAPI app of fal-style endpoints, if the App has any.
        self._asgi = _fal_app(self.instance, self.spec)
        self._calls = Calls(self.instance, self._executor, self._asgi)
        self._openapi_body: bytes | None = None
        self._runner: web.AppRunner | None = None
        self.requests = RequestRegistry()
        self.hints = RunnerHints(self.instance)
        # Set by the entry point once a GPU app's GPUs passed the check; None for a CPU app.
        self.gpus: GpuMonitor | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the port; health answers 503 until ``run_setup`` succeeds."""
        app = web.Application(client_max_size=1024**3)
        g = guard(self.token)  # every route but the health check wants the router's token
        app.router.add_get("/_yurt/health", self._health)
        app.router.add_get("/_yurt/info", g(self._info))
        app.router.add_get("/_yurt/metrics", g(self._metrics))
        app.router.add_get("/_yurt/requests/{request_id}/logs", g(self._logs))
        self._add_endpoints(app, g)
        for path in cancel_paths(self.spec):
            app.router.add_post(path, g(self._cancel))
        # Last: only what matched nothing above, so that a 404 or 405 is JSON too (aiohttp's
        # own are text). The dispatcher tries it after the others, at no cost to them.
        app.router.add_route("*", "/{tail:.*}", g(self._unrouted))
        self._runner = _AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            # The router is the only client and keeps connections for reuse.
            keepalive_timeout=3600,
            shutdown_timeout=self.spec.termination_grace_period_seconds,
            max_headers=MAX_HEADERS,
            max_field_size=MAX_FIELD_SIZE,
            max_line_size=MAX_LINE_SIZE,
        )
        await self._runner.setup()
        site: web.BaseSite
        if self.fd >= 0:
            os.set_inheritable(self.fd, False)  # not into processes the app starts
            site = web.SockSite(self._runner, socket.socket(fileno=self.fd), backlog=1024)
        else:
            site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        log.info("runner_listening", host=self.host, port=self.port, app=self.spec.app_name)

    async def run_setup(self) -> None:
        """Run the user's ``setup()`` bounded by startup_timeout; raises on failure."""
        t0 = time.monotonic()
        await asyncio.wait_for(
            call(self.instance.setup, self._executor), timeout=self.spec.startup_timeout
        )
        self.hints.refresh()
        if self.settle_heap:
            heap.settle()  # what setup() loaded (a model) is never walked by a collection again
        self.state = "ready"
        self.ready_at = time.monotonic()
        self.setup_seconds = self.ready_at - t0
        log.info("runner_ready", app=self.spec.app_name, setup_s=round(self.setup_seconds, 3))

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, teardown."""
        started = time.monotonic()
        was_ready = self.state == "ready"
        self.state = "draining"
        log.info("runner_draining", in_flight=self.in_flight)
        if was_ready:
            await self._handle_exit()
        if self._runner is not None:
            # Closes the listener and idle connections, waits up to shutdown_timeout for
            # handlers still running.
            await self._runner.cleanup()
        if was_ready:
            try:
                grace = self.spec.termination_grace_period_seconds
                await asyncio.wait_for(
                    call(self.instance.teardown, self._health_executor),
                    timeout=teardown_budget(started, time.monotonic(), grace, self.kill_after),
                )
            except Exception:
                log.exception("teardown_failed")
        log.info("runner_stopped", requests_total=self.requests_total)

    async def _handle_exit(self) -> None:
        # fal's hook, told of the stop before the drain; bounded so that it cannot eat the
        # grace period that in-flight requests have.
        try:
            await asyncio.wait_for(
                call(self.instance.handle_exit, self._health_executor),
                timeout=self.spec.termination_grace_period_seconds or 1.0,
            )
        except Exception:
            log.exception("handle_exit_failed")

    def shutdown_executors(self) -> None:
        """Release worker threads without waiting for ones stuck in user code."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._health_executor.shutdown(wait=False, cancel_futures=True)

    # -- handlers ---------------------------------------------------------------------------

    def _add_endpoints(self, app: web.Application, g: Callable[[Handler], Handler]) -> None:
        for ep in self.spec.endpoints:
            if ep.style == "model":
                func = getattr(self.cls, ep.method_name)
                self._bodies[ep.path] = endpoint_body_model(func, ep.method_name)
            handler = self._make_handler(ep, refusal(self.token))
            if ep.is_websocket:
                app.router.add_get(ep.path, handler)
                continue
            app.router.add_post(ep.path, handler)
            if ep.health_check is not None and ep.health_check.method != "POST":
                app.router.add_route(ep.health_check.method, ep.path, handler)
        if "/health" not in self._get_paths():
            app.router.add_get("/health", self._fal_health)
        app.router.add_get("/openapi.json", g(self._openapi))

    def _get_paths(self) -> set[str]:
        """Paths where an endpoint answers GET (a websocket, a GET health check)."""
        return {
            ep.path
            for ep in self.spec.endpoints
            if ep.is_websocket or (ep.health_check is not None and ep.health_check.method == "GET")
        }

    def _make_handler(self, ep: EndpointSpec, refuse: Refusal | None) -> Any:
        invoke = self._calls.invoker(ep, self._bodies.get(ep.path))

        async def handle(request: web.Request) -> web.StreamResponse:
            # Every route but the health check wants the router's token (token_check.py).
            if refuse is not None and (refused := refuse(request)) is not None:
                return refused
            t0 = time.monotonic()
            try:
                response = await serve(request)
            except asyncio.CancelledError:
                self.stats.served(ep.path, 499, time.monotonic() - t0)  # the caller went away
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
            self.stats.served(ep.path, response.status, time.monotonic() - t0)
            return response

        async def serve(request: web.Request) -> web.StreamResponse:
            if self.state != "ready":
                return self._decorate(
                    error_response(503, "runner_unavailable", f"runner is {self.state}")
                )
            if ep.is_websocket and not _is_upgrade(request):
                detail = f"{ep.path} is a websocket endpoint: connect with a websocket upgrade"
                return error_response(400, "bad_request", detail)
            if self.in_flight >= self.spec.max_multiplexing:
                detail = f"runner is at max_multiplexing={self.spec.max_multiplexing}"
                return self._decorate(error_response(429, "runner_busy", detail))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.requests_total += 1
            active = self.requests.begin(request.headers, ep.path)
            try:
                response = await invoke(request, active)
            finally:
                self.in_flight -= 1
                self.requests.finish(active)
            # Whatever the call ended with, a request whose cancellation was acknowledged
            # answers 499: that is what the canceller was promised (unless its reply began).
            if active.cancelled and not response.prepared:
                response = cancelled(active)
            self.hints.refresh()
            return self._decorate(response, active.logs.count)

        return handle

    def _decorate(self, response: web.StreamResponse, log_count: int = 0) -> web.StreamResponse:
        if not response.prepared:
            if log_count:
                response.headers[LOG_COUNT_HEADER] = str(log_count)
            if self.hints.current:  # most apps give none: no header to join
                response.headers[HINTS_HEADER] = self.hints.header()
        return response

    async def _cancel(self, request: web.Request) -> web.Response:
        # Not an endpoint request: served whatever the state and however busy the slots are.
        request_id = request.headers.get(REQUEST_ID, "")
        if not request_id:
            return error_response(
                400,
                "bad_request",
                f"a cancel request needs the {REQUEST_ID} header naming the request to cancel",
            )
        if not self.requests.cancel(request_id):
            return error_response(
                404, "not_found", f"request {request_id} is not in flight on this runner"
            )
        log.info("request_cancel_requested", request_id=request_id)
        return json_response(200, {"status": "CANCELLATION_REQUESTED", "request_id": request_id})

    async def _unrouted(self, request: web.Request) -> web.Response:
        # Only what matched no route comes here: a path the App does not serve, or a method
        # its endpoint does not take.
        path = request.path
        allowed = sorted(self.spec.paths | set(cancel_paths(self.spec)))
        if path in allowed:
            sockets = {ep.path for ep in self.spec.endpoints if ep.is_websocket}
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

    async def _logs(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        entries = self.requests.logs(request_id, forget=request.query.get("forget") == "1")
        if entries is None:
            return error_response(
                404,
                "not_found",
                f"no logs for request {request_id}: this runner has not served it, or its logs "
                "were already fetched with forget=1 or evicted by newer requests",
            )
        return json_response(200, entries)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if self.state != "ready":
            return json_response(503, {"status": self.state})
        hc = self.spec.health_check
        # ``?basic=1``: liveness only, for health checks declared with call_regularly=False.
        if hc is None or hc.health_check is None or request.query.get("basic") == "1":
            return self._decorate(json_response(200, {"status": "ok"}))
        try:
            await asyncio.wait_for(self._check(hc), hc.health_check.timeout_seconds)
        except Exception as exc:
            log.warning("health_check_failed", error=repr(exc))
            return json_response(503, {"status": "unhealthy", "detail": repr(exc)})
        return self._decorate(json_response(200, {"status": "ok"}))

    async def _check(self, hc: EndpointSpec) -> None:
        """Run the user's health check endpoint; raises if it failed."""
        assert hc.health_check is not None
        if hc.style == "fastapi":
            from yurt.runner.asgi import probe

            status, body = await probe(self._asgi, hc.health_check.method, hc.path)
            if not 200 <= status < 300:
                raise RuntimeError(f"{hc.path} answered {status}: {body[:200]!r}")
            return
        method = getattr(self.instance, hc.method_name)
        body_model = self._bodies[hc.path]
        args = (body_model.model_validate({}),) if body_model is not None else ()
        await call(method, self._health_executor, *args)

    async def _fal_health(self, _: web.Request) -> web.Response:
        # fal's runners answer GET /health with the App's ``health()``: ``{"version": ...}``.
        if self.state != "ready":
            return json_response(503, {"status": self.state})
        health = self.instance.health
        if hasattr(health, ENDPOINT_ATTR):  # an endpoint named health: not fal's hook
            return json_response(200, App.health(self.instance))
        try:
            return json_response(200, await call(health, self._health_executor))
        except Exception as exc:
            log.warning("health_failed", error=repr(exc))
            return error_response(503, "unhealthy", f"health() raised {type(exc).__name__}")

    async def _openapi(self, _: web.Request) -> web.Response:
        if self._openapi_body is None:
            from yurt.openapi import document

            self._openapi_body = json.dumps(document(self.spec)).encode()
        return web.Response(body=self._openapi_body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._scrape is None:
            from yurt.runner.metrics import RunnerCollector

            collector = RunnerCollector(self)
            self._scrape = collector, registry_for(collector)
        collector, registry = self._scrape
        if self.gpus is not None:
            # NVML calls block: off the loop, as for /_yurt/info.
            collector.gpus = await asyncio.to_thread(self.gpus.snapshot)
        body, content_type = render(registry, request.headers.get("accept", ""))
        return web.Response(body=body, headers={"content-type": content_type})

    async def _info(self, _: web.Request) -> web.Response:
        gpus = []
        if self.gpus is not None:
            # NVML calls block: off the loop, and not on the request or health threads.
            gpus = await asyncio.to_thread(self.gpus.snapshot)
        return json_response(
            200,
            {
                "app_name": self.spec.app_name,
                "class_name": self.spec.class_name,
                "revision": self.header.revision,
                "runner_id": self.runner_id,
                "pid": os.getpid(),
                "state": self.state,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "max_multiplexing": self.spec.max_multiplexing,
                "requests_total": self.requests_total,
                "python": self.header.python,
                "gpus": [g.as_dict() for g in gpus],
                "hints": self.hints.current,
            },
        )


class _AppRunner(web.AppRunner):
    """aiohttp's AppRunner whose connections answer their errors in JSON."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return JsonErrorServer(
            made.request_handler,
            page=_error_page,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def teardown_budget(
    drain_started: float, now: float, grace: float, kill_after: float = TEARDOWN_SLACK_S
) -> float:
    """Seconds teardown() may take: what is left before the supervisor's SIGKILL (the grace
    period plus ``kill_after`` from the drain's start), less a margin for the exit."""
    return max(0.5, drain_started + grace + kill_after - 0.5 - now)


def _error_type(status: int) -> str:
    """``request_too_large`` for 413: the phrase of the status, in snake case."""
    phrase = HTTPStatus(status).phrase if status in _STATUSES else f"http_{status}"
    return phrase.lower().replace(" ", "_").replace("-", "_")


_STATUSES = frozenset(s.value for s in HTTPStatus)


def _error_page(status: int, exc: BaseException | None) -> web.StreamResponse:
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


def _fal_app(instance: App, spec: AppSpec) -> Any:
    fal_style = [ep for ep in spec.endpoints if ep.style == "fastapi"]
    if not fal_style:
        return None
    # Only apps with such endpoints pay for importing FastAPI.
    from yurt.runner.fal import build_endpoint_app

    return build_endpoint_app(instance, fal_style)


def _is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"
