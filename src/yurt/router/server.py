"""The router: one port for every app's sync runs and yurt's own routes.

The hot path forwards raw bytes: the fast lane (``fastlane.py``, httptools) faces clients making
sync runs, aiohttp (``web.py``) serves everything else, a keep-alive connection pool per runner
(``pool.py``) faces the runners, and nothing in between parses JSON; validation belongs to the
runner, where the models live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from yurt.backends.base import Backend, Discovery, RunnerEndpoint, RunnerState, StartFailure
from yurt.config import KeysConfig, RouterConfig
from yurt.errors import ConfigError, RequestError
from yurt.metrics import registry_for
from yurt.router.core import QueueEngine, QueueService, RequestCore
from yurt.router.describe import describe_apps
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.fastlane import FrontProtocol
from yurt.router.gate import Gate
from yurt.router.http import Reply, error_reply
from yurt.router.metrics import RouterCollector, RouterStats
from yurt.router.pool import UpstreamError
from yurt.router.queueing import QueueParts
from yurt.router.sweep import sweep_idle
from yurt.router.web import WebFace, error_page_json
from yurt.runner.invoke import JsonErrorServer
from yurt.scheduler.loop import Poke
from yurt.scheduler.policy import AppLoad
from yurt.spec import AppSpec

if TYPE_CHECKING:
    from yurt.admin.api import AdminApi
    from yurt.files.http import FilesApi

log = structlog.get_logger("yurt.router")


class Router:
    """Routes requests to runners and applies the platform rules (also the scheduler's load)."""

    def __init__(
        self,
        config: RouterConfig,
        discovery: Discovery,
        backend: Backend,
        wake: Poke,
        gate: Gate | None = None,
        *,
        admin: AdminApi | None = None,
        files: FilesApi | None = None,
        queue: QueueParts | None = None,
    ) -> None:
        """``wake`` is poked when a request waits for a runner (the scheduler waits on it;
        a ``Scheduler`` will do, as it pokes its own); ``admin``, ``files`` and ``queue`` serve
        ``/_yurt/api/``, ``/files/`` and ``/queue/`` when given."""
        self.config = config
        # No gate given: no keys, every app open (as on a laptop).
        self.gate = gate or Gate(
            None, KeysConfig(), host="127.0.0.1", public=True, admin_token=None
        )
        self.discovery = discovery
        self.backend = backend
        self.wake = wake
        self.routes: dict[str, AppRoute] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}  # app id -> its discovery follower
        self._chores: set[asyncio.Future[None]] = set()
        self._server: asyncio.Server | None = None
        self._web: web.Server | None = None
        self._fast: set[FrontProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self.core = RequestCore(self)
        self.admin = admin
        self.files = files
        self.stats = RouterStats()
        # The queue's engine and this router need each other: the router makes it, once its
        # own parts (the routes, the tallies) are there (``yurt.queue.parts``).
        self.queue: QueueEngine | None = None
        self.queue_api: QueueService | None = None
        if queue is not None:
            self.queue, self.queue_api = queue.serve(self)
        self.metrics = registry_for(RouterCollector(self))
        backend.add_failure_listener(self._start_failed)
        backend.add_keep_listener(self._kept)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The base URL clients use."""
        scheme = "https" if self.config.tls_cert is not None else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def add_app(self, app_id: str, spec: AppSpec) -> None:
        """Route ``app_id`` (``owner/app_name``) and follow its healthy runners."""
        route = AppRoute(app_id, spec, self.wake.poke)
        self.routes[app_id] = route
        self._watchers[app_id] = asyncio.create_task(self._follow(route))
        if self.queue is not None:
            self.queue.add_app(route)

    def remove_app(self, app_id: str) -> int:
        """Route nothing more to the app (it is undeployed); returns how many requests failed.

        New requests get the 404 ``app_not_found`` an app never deployed gets. Requests
        waiting for a runner, direct or queued, fail now with 410 ``app_undeployed``; those
        running on a runner finish there (or meet the same error should they need another
        attempt). Completed queue results stay readable until they expire.
        """
        route = self.routes.pop(app_id, None)
        if route is None:
            return 0
        watcher = self._watchers.pop(app_id, None)
        if watcher is not None:
            watcher.cancel()
        error = RequestError(
            f"{app_id} was undeployed before this request got a runner",
            status=410,
            error_type="app_undeployed",
        )
        failed = route.fail_waiters(error)
        if self.queue is not None:
            failed += self.queue.remove_app(app_id, error)
        for runner_id in list(route.slots):
            if (slot := route.retire(runner_id)) is not None:
                self._close_when_idle(slot)
        log.info("app_unrouted", app=app_id, failed=failed)
        return failed

    def update_app(self, app_id: str, spec: AppSpec) -> None:
        """Route a new revision of a served app (its runners change as the backend rolls)."""
        route = self.routes[app_id]
        route.spec, route.paths = spec, spec.paths

    async def bind(self) -> None:
        """Open the listening socket without serving yet, so that ``port`` and ``url`` are known.

        A cluster backend hands runners this URL to fetch their payloads from before the router
        starts to serve (apps are served first; see ``Platform.start``).
        """
        if self._server is not None:
            return
        kwargs: dict[str, Any] = {} if self.config.access_log else {"access_log": None}
        kwargs["keepalive_timeout"] = self.config.keepalive_timeout
        self._web = JsonErrorServer(WebFace(self).handle, page=error_page_json, **kwargs)
        loop = asyncio.get_running_loop()
        web_server = self._web
        try:
            self._server = await loop.create_server(
                lambda: FrontProtocol(self.core, self.config, web_server, self._fast),
                self.config.host,
                self.config.port,
                backlog=2048,
                ssl=self.load_tls(),
                start_serving=False,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}; "
                "pick another --port or --host"
            ) from exc

    async def start(self) -> None:
        """Listen: sync runs in the fast lane, everything else on aiohttp."""
        await self.bind()
        assert self._server is not None
        await self._server.start_serving()
        self._sweeper = asyncio.create_task(sweep_idle(self.config, self._fast))
        if self.queue is not None:
            self.queue.start()  # purging old results
        log.info("router_listening", url=self.url)

    def load_tls(self) -> ssl.SSLContext | None:
        """The TLS context from the configured certificate and key (None: plain http).

        Called early by the platform too, so that a bad certificate fails before anything runs.
        """
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is None or key is None:
            return None
        if self._ssl is not None:
            return self._ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS certificate {cert} with key {key}: {exc}; "
                "give a PEM certificate chain and its private key"
            ) from exc
        self._ssl = context
        return context

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish within ``grace``, close pools."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        # Queued requests start no more, and status streams end: they only watch. Attempts in
        # flight and direct calls share the one grace period below.
        if self.queue_api is not None:
            self.queue_api.close()
        for conn in list(self._fast):
            conn.close_when_idle()
        deadline = time.monotonic() + grace
        while self._fast and time.monotonic() < deadline:  # noqa: ASYNC110 - shutdown only
            await asyncio.sleep(0.02)
        for conn in list(self._fast):
            if conn.transport is not None:
                conn.transport.abort()
        if self._web is not None:
            # aiohttp's shutdown waits out the grace period on an idle keep-alive connection
            # (a health checker's, say) until its next request; close those first.
            for handler in self._web.connections:
                handler.close()
            await self._web.shutdown(max(0.0, deadline - time.monotonic()))
        if self.queue is not None:
            await self.queue.stop(max(0.0, deadline - time.monotonic()))
        for task in self._watchers.values():
            task.cancel()
        for task in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for route in self.routes.values():
            for slot in route.slots.values():
                await slot.pool.close()
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)

    # -- LoadSource, for the scheduler ------------------------------------------------------

    def load(self, app_id: str) -> AppLoad:
        """The app's load now."""
        return self.routes[app_id].load()

    def retire(self, app_id: str, runner_id: str) -> None:
        """Send no new request to this runner."""
        route = self.routes.get(app_id)  # None: undeployed while a stop was on its way
        slot = route.retire(runner_id) if route is not None else None
        if slot is not None:
            self._close_when_idle(slot)

    # -- following discovery ---------------------------------------------------------------

    def reinstate(self, app_id: str, runner_id: str) -> None:
        """Route to a retired runner again, if discovery still lists it (its stop failed)."""
        route = self.routes.get(app_id)
        if route is None:
            return  # undeployed meanwhile
        route.reinstate(runner_id)
        self._apply(route, self.discovery.healthy(app_id))

    async def _follow(self, route: AppRoute) -> None:
        async for endpoints in self.discovery.watch(route.app_id):
            self._apply(route, endpoints)

    def _kept(self, app_id: str, runner_id: str) -> None:
        if app_id in self.routes:
            log.info("runner_kept", app=app_id, runner=runner_id)
            self.reinstate(app_id, runner_id)

    def _apply(self, route: AppRoute, endpoints: list[RunnerEndpoint]) -> None:
        # A retired runner stays out while the backend still has it (a stop on a cluster can
        # take a while, and the runner may pass its checks meanwhile), not merely while
        # discovery lists it; and a runner the backend is stopping is never routed to.
        views = self.backend.runners(route.app_id)
        route.retired &= {v.runner_id for v in views}
        for v in views:
            if v.state == RunnerState.DRAINING and v.runner_id not in route.retired:
                self.retire(route.app_id, v.runner_id)
        known = set(route.slots)
        for slot in route.update(endpoints):
            self._close_when_idle(slot)
        if route.slots and self.queue is not None:
            self.queue.runner_up(route.app_id)
        for runner_id in route.slots.keys() - known:
            self._background(self._learn_hints(route.slots[runner_id]))

    async def _learn_hints(self, slot: Slot) -> None:
        # Responses carry x-yurt-runner-hints afterwards; this covers a runner's first request.
        # The GPUs a runner checked it holds are read once too, for /_yurt/apps.
        try:
            reply = await slot.pool.request(b"GET", b"/_yurt/info", [], b"", timeout=10)
            info = json.loads(reply.body) if reply.status == 200 else {}
            hints, gpus = info.get("hints"), info.get("gpus") or []
            slot.gpus = tuple((str(g["name"]), str(g["uuid"])) for g in gpus)
        except (UpstreamError, ValueError, AttributeError, KeyError, TypeError):
            return
        if isinstance(hints, list) and all(isinstance(h, str) for h in hints):
            slot.hints = frozenset(hints)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _close_when_idle(self, slot: Slot) -> None:
        # In-flight requests keep their own connections; idle ones can go now.
        self._background(slot.pool.close())

    def _start_failed(self, failure: StartFailure) -> None:
        route = self.routes.get(failure.app_id)
        # With a routable runner the waiting requests will still be served; only an app with
        # none has nothing better to tell its callers than why its runner failed.
        if route is None or route.slots:
            return
        queued = 0
        if self.queue is not None:
            queued = self.queue.start_failed(
                failure.app_id, 503, failure.error_type, failure.detail, final=failure.final
            )
        waiting = route.fail_waiters(
            RequestError(failure.detail, status=503, error_type=failure.error_type)
        )
        if waiting or queued:
            log.warning(
                "waiting_requests_failed",
                app=failure.app_id,
                count=waiting,
                queued=queued,
                error_type=failure.error_type,
            )

    # -- routing, for the core and the queue ----------------------------------------------

    def resolve(self, path: str) -> tuple[AppRoute, str] | Reply:
        """``/{owner}/{app}[/endpoint]`` -> (route, endpoint path), or a 404 reply."""
        parts = path.split("/", 3)  # "", owner, app, rest
        if len(parts) < 3 or not parts[2]:
            return error_reply(
                404, "not_found", f"no route for {path}; use /{{owner}}/{{app}}[/path]"
            )
        route = self.routes.get(f"{parts[1]}/{parts[2]}")
        if route is None:
            return error_reply(
                404, "app_not_found", f"no app '{parts[1]}/{parts[2]}' on this router"
            )
        endpoint = "/" + parts[3] if len(parts) == 4 else "/"
        if endpoint not in route.paths:
            return error_reply(
                404,
                "endpoint_not_found",
                f"app {route.app_id!r} has no endpoint {endpoint!r}; it has {sorted(route.paths)}",
            )
        return route, endpoint

    def unplaceable(self, route: AppRoute) -> RequestError | None:
        """The error for a request to an app with no runner that the backend cannot place
        (nothing fits until the cluster changes); None when the request may wait."""
        if route.slots:
            return None
        why = self.backend.unplaced(route.app_id)
        if why is None or not why.final:
            return None
        return RequestError(why.detail, status=503, error_type="placement_failed")

    def dispatch_timeout(self, spec: AppSpec) -> float:
        """How long a sync run waits for a runner."""
        if self.config.dispatch_timeout is not None:
            return self.config.dispatch_timeout
        return spec.startup_timeout + 10.0

    def terminate_slot(self, route: AppRoute, slot: Slot, reason: str) -> None:
        """Route nothing more to this runner and have the backend stop and replace it."""
        if route.retire(slot.runner_id) is not None:
            self.stats.terminated(route.app_id, reason)
            self._close_when_idle(slot)
            app_id, runner_id = route.app_id, slot.runner_id
            log.warning("runner_terminate_requested", app=app_id, runner=runner_id, reason=reason)
            self._background(self._terminate(app_id, runner_id, reason))

    async def _terminate(self, app_id: str, runner_id: str, reason: str) -> None:
        try:
            await self.backend.stop_runner(app_id, runner_id, reason=reason, replace=True)
        except Exception as error:
            log.error("runner_terminate_failed", error=f"{type(error).__name__}: {error}")

    def describe(self) -> list[dict[str, object]]:
        """Apps, their load and their runners, for ``GET /_yurt/apps`` (``describe.py``)."""
        return describe_apps(self.routes, self.backend, self.queue, time.monotonic())
