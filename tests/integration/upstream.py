"""A router in front of an aiohttp server standing in for a runner, for replies a runner may
send (streams, upgrades) that tests need to shape byte by byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

import yurt
from yurt.backends.base import RunnerEndpoint, RunnerState, RunnerView
from yurt.config import RouterConfig, SchedulerConfig
from yurt.discovery.local import LocalRegistry
from yurt.router.server import Router
from yurt.scheduler.loop import Scheduler
from yurt.spec import build_spec

from faces import front
from support import IdleBackend, wait_until

APP = "o/stand-in"
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Body(BaseModel):
    x: int = 0


class StandIn(yurt.App, request_timeout=3, max_multiplexing=2):
    """The app the router believes it routes to; the stand-in server answers for it."""

    @yurt.endpoint("/")
    def run(self, body: Body) -> Body:
        return body

    @yurt.endpoint("/stream")
    def stream(self, body: Body) -> Body:
        return body

    @yurt.endpoint("/ws")
    def ws(self, body: Body) -> Body:
        return body


@dataclass
class Views(IdleBackend):
    """A backend with one runner that records the stops asked of it."""

    stops: list[tuple[str, str]] = field(default_factory=list)

    def runners(self, app_id: str) -> list[RunnerView]:
        return [RunnerView("r1", app_id, RunnerState.IDLE, "127.0.0.1", 1, None, 0.0)]

    def target(self, app_id: str) -> int:
        return 1

    def pick_stops(self, app_id: str, idle: Sequence[str]) -> list[str]:
        return []

    async def stop_runner(self, app_id: str, runner_id: str, **kw: Any) -> None:
        self.stops.append((runner_id, kw.get("reason", "")))


@dataclass
class Rig:
    """The URL to call (through the chosen face), the router, and its backend stand-in."""

    url: str
    router: Router
    backend: Views


@asynccontextmanager
async def routed(handler: Handler, face: str, **config: Any) -> AsyncIterator[Rig]:
    """A router (``RouterConfig`` from ``config``) serving ``StandIn`` as app ``o/stand-in`` on
    ``handler``'s server."""

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/_yurt/"):  # the router asks a new runner for its info
            return web.Response(status=404)
        return await handler(request)

    upstream = web.ServerRunner(web.Server(serve))
    await upstream.setup()
    site = web.TCPSite(upstream, "127.0.0.1", 0)
    await site.start()
    port = upstream.addresses[0][1]
    registry, backend = LocalRegistry(), Views()
    scheduler = Scheduler(backend, SchedulerConfig())  # type: ignore[arg-type]
    router = Router(RouterConfig(port=0, **config), registry, backend, scheduler)  # type: ignore[arg-type]
    await router.start()
    try:
        router.add_app(APP, build_spec(StandIn))
        registry.set_healthy(APP, RunnerEndpoint("r1", "127.0.0.1", port))
        await wait_until(lambda: bool(router.routes[APP].slots), what="the stand-in routed")
        async with front(router.url, face) as url:
            yield Rig(f"{url}/{APP}", router, backend)
    finally:
        await router.stop(1.0)
        await scheduler.stop()
        await upstream.cleanup()


async def settle() -> None:
    """Let callbacks already due run."""
    for _ in range(5):
        await asyncio.sleep(0)
