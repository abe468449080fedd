"""The router never routes to a runner its backend is stopping, whatever discovery says."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import yurt
from yurt.backends.base import RunnerEndpoint, RunnerState, RunnerView
from yurt.config import RouterConfig, SchedulerConfig
from yurt.discovery.local import LocalRegistry
from yurt.router.server import Router
from yurt.scheduler.loop import Scheduler
from yurt.spec import build_spec

from support import IdleBackend


class Body(BaseModel):
    x: int = 0


class Served(yurt.App):
    @yurt.endpoint("/")
    def run(self, body: Body) -> Body:
        return body


APP = "o/served"


class Views(IdleBackend):
    """A backend that lists runners in given states and does nothing else."""

    def __init__(self) -> None:
        self.states: dict[str, RunnerState] = {}

    def runners(self, app_id: str) -> list[RunnerView]:
        return [RunnerView(r, app_id, s, "h", 1, None, 0.0) for r, s in self.states.items()]

    def target(self, app_id: str) -> int:
        return len(self.states)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_draining_runner_listed_healthy_is_not_routed() -> None:
    """Discovery lists both runners; the backend is stopping one: only the other is routed."""
    registry, backend = LocalRegistry(), Views()
    scheduler = Scheduler(backend, SchedulerConfig())  # type: ignore[arg-type]
    router = Router(RouterConfig(port=0), registry, backend, scheduler)  # type: ignore[arg-type]
    router.add_app(APP, build_spec(Served))
    backend.states = {"a": RunnerState.IDLE, "b": RunnerState.DRAINING}
    registry.set_healthy(APP, RunnerEndpoint("a", "127.0.0.1", 1))
    registry.set_healthy(APP, RunnerEndpoint("b", "127.0.0.1", 2))
    await settle()
    try:
        assert list(router.routes[APP].slots) == ["a"]
    finally:
        await router.stop(0.1)
