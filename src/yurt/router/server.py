"""The router: one port for every app's sync runs and yurt's own routes.

The hot path forwards raw bytes: aiohttp's server faces the client, a keep-alive connection pool
per runner (``pool.py``) faces the runners, and nothing in between parses JSON; validation
belongs to the runner, where the models live.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiohttp import web

from yurt.backends.base import Backend, Discovery, StartFailure
from yurt.config import RouterConfig
from yurt.errors import RequestError
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.http import error_response, forward_headers, new_request_id, reply_headers
from yurt.router.pool import UpstreamError
from yurt.router.rules import direct_error, direct_status
from yurt.scheduler.loop import Scheduler
from yurt.scheduler.policy import AppLoad
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.router")

JSON = "application/json"


class Router:
    """Routes requests to runners and applies the platform rules (also the scheduler's load)."""

    def __init__(
        self, config: RouterConfig, discovery: Discovery, backend: Backend, scheduler: Scheduler
    ) -> None:
        self.config = config
        self.discovery = discovery
        self.backend = backend
        self.scheduler = scheduler
        self.routes: dict[str, AppRoute] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Future[None]] = set()
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        scheduler.source = self
        backend.add_failure_listener(self._start_failed)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._site is not None and self._site._server is not None
        sockets = self._site._server.sockets  # type: ignore[attr-defined]
        port: int = sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The base URL clients use."""
        return f"http://{self.config.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def add_app(self, app_id: str, spec: AppSpec) -> None:
        """Route ``app_id`` (``owner/app_name``) and follow its healthy runners."""
        route = AppRoute(app_id, spec, self.scheduler.poke)
        self.routes[app_id] = route
        self._watchers.append(asyncio.create_task(self._follow(route)))

    async def start(self) -> None:
        """Listen."""
        kwargs: dict[str, Any] = {} if self.config.access_log else {"access_log": None}
        server = web.Server(self._handle, **kwargs)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=2048)
        await self._site.start()
        log.info("router_listening", url=self.url)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish within ``grace``, close pools."""
        if self._runner is not None:
            self._runner._shutdown_timeout = grace
            await self._runner.cleanup()
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for route in self.routes.values():
            for slot in route.slots.values():
                await slot.pool.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- LoadSource, for the scheduler ------------------------------------------------------

    def load(self, app_id: str) -> AppLoad:
        """The app's load now."""
        return self.routes[app_id].load()

    def retire(self, app_id: str, runner_id: str) -> None:
        """Send no new request to this runner."""
        slot = self.routes[app_id].retire(runner_id)
        if slot is not None:
            self._close_when_idle(slot)

    # -- following discovery ---------------------------------------------------------------

    async def _follow(self, route: AppRoute) -> None:
        async for endpoints in self.discovery.watch(route.app_id):
            for slot in route.update(endpoints):
                self._close_when_idle(slot)

    def _close_when_idle(self, slot: Slot) -> None:
        # In-flight requests keep their own connections; idle ones can go now.
        task = asyncio.ensure_future(slot.pool.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _start_failed(self, failure: StartFailure) -> None:
        route = self.routes.get(failure.app_id)
        if route is None:
            return
        n = route.fail_waiters(
            RequestError(failure.detail, status=503, error_type=failure.error_type)
        )
        if n:
            log.warning(
                "waiting_requests_failed",
                app=failure.app_id,
                count=n,
                error_type=failure.error_type,
            )

    # -- requests --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request_id = new_request_id()
        path = request.path
        if path.startswith("/_yurt/"):
            return await self._platform(request, path, request_id)
        parts = path.split("/", 3)  # "", owner, app, rest
        if len(parts) < 3 or not parts[2]:
            return error_response(
                404, "not_found", f"no route for {path}; use /{{owner}}/{{app}}[/path]", request_id
            )
        app_id = f"{parts[1]}/{parts[2]}"
        route = self.routes.get(app_id)
        if route is None:
            return error_response(
                404, "app_not_found", f"no app {app_id!r} on this router", request_id
            )
        endpoint = "/" + parts[3] if len(parts) == 4 else "/"
        if endpoint not in route.paths:
            known = sorted(route.paths)
            return error_response(
                404,
                "endpoint_not_found",
                f"app {app_id!r} has no endpoint {endpoint!r}; it has {known}",
                request_id,
            )
        if request.method != "POST":
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method} {path}: endpoints take POST",
                request_id,
            )
        try:
            body = await self._read_body(request)
            return await self._forward(request, route, endpoint, body, request_id)
        except RequestError as exc:
            return error_response(exc.status, exc.error_type, exc.detail, request_id)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.config.max_body_size
        length = request.content_length
        too_big = RequestError(
            f"request body exceeds the router's limit of {limit} bytes",
            status=413,
            error_type="request_too_large",
        )
        if length is not None:
            if length > limit:
                raise too_big
            return await request.content.readexactly(length) if length else b""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def _forward(
        self, request: web.BaseRequest, route: AppRoute, endpoint: str, body: bytes, request_id: str
    ) -> web.StreamResponse:
        spec = route.spec
        slot = route.try_acquire() or await route.acquire(self._dispatch_timeout(spec))
        target = endpoint if not request.query_string else f"{endpoint}?{request.query_string}"
        headers = forward_headers(request.raw_headers, request_id)
        try:
            reply = await slot.pool.request(
                b"POST", target.encode(), headers, body, timeout=spec.request_timeout
            )
        except UpstreamError as exc:
            verdict = direct_error(exc.kind)
            self._terminate(route, slot, verdict.reason)
            route.release(slot)
            assert verdict.status is not None
            return error_response(verdict.status, verdict.error_type, verdict.detail, request_id)
        verdict = direct_status(reply.status)
        if verdict.terminate:
            self._terminate(route, slot, verdict.reason)
        route.release(slot)
        return web.Response(
            status=reply.status, body=reply.body, headers=reply_headers(reply.headers, request_id)
        )

    def _dispatch_timeout(self, spec: AppSpec) -> float:
        if self.config.dispatch_timeout is not None:
            return self.config.dispatch_timeout
        return spec.startup_timeout + 10.0

    def _terminate(self, route: AppRoute, slot: Slot, reason: str) -> None:
        if route.retire(slot.runner_id) is not None:
            self._close_when_idle(slot)
            self.scheduler.terminate(route.app_id, slot.runner_id, reason)

    # -- yurt's own routes -----------------------------------------------------------------

    async def _platform(self, request: web.BaseRequest, path: str, request_id: str) -> web.Response:
        headers = {"x-yurt-request-id": request_id, "x-fal-request-id": request_id}
        if path == "/_yurt/health":
            return web.json_response({"status": "ok"}, headers=headers)
        if path == "/_yurt/apps":
            return web.json_response(self._describe(), headers=headers)
        return error_response(404, "not_found", f"no route for {path}", request_id)

    def _describe(self) -> list[dict[str, object]]:
        now = time.monotonic()
        out: list[dict[str, object]] = []
        for app_id, route in self.routes.items():
            runners = []
            for view in self.backend.runners(app_id):
                slot = route.slots.get(view.runner_id)
                state = view.state.value
                if slot is not None and state == "IDLE" and slot.in_flight:
                    state = "RUNNING"
                runners.append(
                    {
                        "runner_id": view.runner_id,
                        "state": state,
                        "pid": view.pid,
                        "port": view.port,
                        "in_flight": slot.in_flight if slot else 0,
                        "age_s": round(now - view.started_at, 3),
                        "detail": view.detail,
                    }
                )
            load = route.load()
            out.append(
                {
                    "app_id": app_id,
                    "target": self.backend.target(app_id),
                    "waiting": load.waiting,
                    "in_flight": load.in_flight,
                    "paths": sorted(route.paths),
                    "runners": runners,
                }
            )
        return out
