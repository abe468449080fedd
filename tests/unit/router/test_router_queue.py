"""A router is made with its queue's parts, or without a queue at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yurt
from yurt.config import QueueConfig, RouterConfig, SchedulerConfig
from yurt.discovery.local import LocalRegistry
from yurt.queue.api import QueueApi
from yurt.queue.engine import QueueEngine
from yurt.queue.parts import QueueParts
from yurt.queue.store import QueueStore
from yurt.router.admitted import QueueCall, SyncRun
from yurt.router.http import Reply
from yurt.router.server import Router
from yurt.scheduler.loop import Scheduler
from yurt.spec import build_spec

from support import IdleBackend

APP = "o/echo"


class Echo(yurt.App):
    @yurt.endpoint("/")
    async def run(self) -> dict[str, str]:
        return {}


def router(queue: QueueParts | None = None) -> Router:
    backend = IdleBackend()
    scheduler = Scheduler(backend, SchedulerConfig())  # type: ignore[arg-type]
    return Router(
        RouterConfig(port=0),
        LocalRegistry(),
        backend,  # type: ignore[arg-type]
        scheduler,
        queue=queue,
    )


def admit(router: Router, path: str) -> SyncRun | QueueCall | Reply:
    got = router.core.admit(b"POST", path, "", [], "http", "127.0.0.1:1", None)
    assert isinstance(got, SyncRun | QueueCall | Reply)
    return got


async def test_a_router_made_with_queue_parts_serves_a_queue_on_itself(tmp_path: Path) -> None:
    """The router makes one engine and one set of /queue/ routes from the parts it is given,
    both on the router itself; its apps get queues as they are routed."""
    store = QueueStore(tmp_path / "queue.sqlite3")
    store.open()
    made = router(QueueParts(store, QueueConfig()))
    try:
        assert isinstance(made.queue, QueueEngine) and made.queue.store is store
        assert isinstance(made.queue_api, QueueApi)
        assert made.queue_api.engine is made.queue and made.queue_api.router is made
        made.add_app(APP, build_spec(Echo))
        assert made.queue.depth(APP) == (0, 0)
        assert isinstance(admit(made, f"/queue/{APP}"), QueueCall)
    finally:
        await asyncio.sleep(0)
        await made.stop(0.1)
        store.close()


async def test_a_router_made_without_a_queue_serves_no_queue() -> None:
    """Without queue parts there is no engine and no /queue/ route: such a path is looked up
    as an app's, and found by none."""
    made = router()
    made.add_app(APP, build_spec(Echo))
    try:
        assert made.queue is None and made.queue_api is None
        reply = admit(made, f"/queue/{APP}")
        assert isinstance(reply, Reply) and reply.status == 404
        assert isinstance(admit(made, f"/{APP}"), SyncRun)
    finally:
        await asyncio.sleep(0)
        await made.stop(0.1)
