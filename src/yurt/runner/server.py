"""The runner's HTTP server: its lifecycle (open the port, run ``setup()``, drain), the routes.

The App's endpoints are routed by app_routes.py; the runner's own routes (``/_yurt/health``,
``/_yurt/info``, ``/_yurt/metrics``, ``GET /_yurt/requests/{request_id}/logs`` for what a request
printed and logged, and for each endpoint path P ``POST {P}/cancel``, for "/" that is "/cancel",
unless the App has an endpoint of its own at that path) by yurt_routes.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, get_args

import structlog
from aiohttp import web
from pydantic import BaseModel

from yurt import heap
from yurt.app import App
from yurt.packaging import PayloadHeader
from yurt.runner.app_routes import add_endpoints, error_page_response, fal_app
from yurt.runner.endpoints import Calls
from yurt.runner.gpus import GpuMonitor
from yurt.runner.hints import HINTS_HEADER, RunnerHints
from yurt.runner.invoke import JsonErrorServer, call
from yurt.runner.requests import MAX_FIELD_SIZE, MAX_HEADERS, MAX_LINE_SIZE, RequestRegistry
from yurt.runner.stats import RunnerStats
from yurt.runner.token_check import guard
from yurt.runner.yurt_routes import YurtRoutes, cancel_paths
from yurt.spec import TEARDOWN_SLACK_S, AppSpec, build_spec

__all__ = ["LOG_COUNT_HEADER", "RunnerServer", "State", "cancel_paths", "teardown_budget"]

log = structlog.get_logger("yurt.runner")

State = Literal["starting", "ready", "draining", "failed"]
LOG_COUNT_HEADER = "x-yurt-log-count"


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
        # Set once the runner leaves "starting" (ready, or draining): a health check asked to
        # wait (``?wait=S``) answers then, so a starting runner is seen ready at once.
        self.settled = asyncio.Event()
        self.setup_seconds: float | None = None
        self.stats = RunnerStats()
        # One thread per request slot; health checks get their own so a busy runner still
        # answers them.
        self._executor = ThreadPoolExecutor(self.spec.max_multiplexing, "yurt-endpoint")
        self.health_executor = ThreadPoolExecutor(1, "yurt-health")
        # The request model of each model-style endpoint, by path (or None: it takes no body).
        self.bodies: dict[str, type[BaseModel] | None] = {}
        # The FastAPI app of fal-style endpoints, if the App has any.
        self.asgi = fal_app(self.instance, self.spec)
        self.calls = Calls(self.instance, self._executor, self.asgi)
        self._runner: web.AppRunner | None = None
        self.requests = RequestRegistry()
        self.hints = RunnerHints(self.instance)
        # Set by the entry point once a GPU app's GPUs passed the check; None for a CPU app.
        self.gpus: GpuMonitor | None = None
        self.routes = YurtRoutes(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the port; health answers 503 until ``run_setup`` succeeds."""
        app = web.Application(client_max_size=1024**3)
        g = guard(self.token)  # every route but the health check wants the router's token
        routes = self.routes
        app.router.add_get("/_yurt/health", routes.health)
        app.router.add_get("/_yurt/info", g(routes.info))
        app.router.add_get("/_yurt/metrics", g(routes.metrics))
        app.router.add_get("/_yurt/requests/{request_id}/logs", g(routes.logs))
        add_endpoints(self, app, g)
        for path in cancel_paths(self.spec):
            app.router.add_post(path, g(routes.cancel))
        # Last: only what matched nothing above, so that a 404 or 405 is JSON too (aiohttp's
        # own are text). The dispatcher tries it after the others, at no cost to them.
        app.router.add_route("*", "/{tail:.*}", g(routes.unrouted))
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
        self.settled.set()
        self.ready_at = time.monotonic()
        self.setup_seconds = self.ready_at - t0
        log.info("runner_ready", app=self.spec.app_name, setup_s=round(self.setup_seconds, 3))

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, teardown."""
        started = time.monotonic()
        was_ready = self.state == "ready"
        self.state = "draining"
        self.settled.set()
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
                    call(self.instance.teardown, self.health_executor),
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
                call(self.instance.handle_exit, self.health_executor),
                timeout=self.spec.termination_grace_period_seconds or 1.0,
            )
        except Exception:
            log.exception("handle_exit_failed")

    def shutdown_executors(self) -> None:
        """Release worker threads without waiting for ones stuck in user code."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.health_executor.shutdown(wait=False, cancel_futures=True)

    def decorate(self, response: web.StreamResponse, log_count: int = 0) -> web.StreamResponse:
        """``response`` with the request's log count and the runner's hints, unless sent."""
        if not response.prepared:
            if log_count:
                response.headers[LOG_COUNT_HEADER] = str(log_count)
            if self.hints.current:  # most apps give none: no header to join
                response.headers[HINTS_HEADER] = self.hints.header()
        return response


class _AppRunner(web.AppRunner):
    """aiohttp's AppRunner whose connections answer their errors in JSON."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return JsonErrorServer(
            made.request_handler,
            page=error_page_response,
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
