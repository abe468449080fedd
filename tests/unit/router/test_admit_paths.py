"""The request core remembers the endpoint paths it resolved, and never serves a stale one."""

from __future__ import annotations

import asyncio

import yurt
from yurt.config import RouterConfig, SchedulerConfig
from yurt.discovery.local import LocalRegistry
from yurt.router.admitted import SyncRun
from yurt.router.http import Reply
from yurt.router.server import Router
from yurt.scheduler.loop import Scheduler
from yurt.spec import build_spec

from support import IdleBackend

APP = "o/two"


class Two(yurt.App):
    @yurt.endpoint("/a")
    async def a(self) -> dict[str, str]:
        return {}

    @yurt.endpoint("/b")
    async def b(self) -> dict[str, str]:
        return {}


class One(yurt.App):
    @yurt.endpoint("/a")
    async def a(self) -> dict[str, str]:
        return {}


def admit(router: Router, path: str) -> SyncRun | Reply:
    got = router.core.admit(b"POST", path, "", [], "http", "", None)
    assert isinstance(got, SyncRun | Reply)
    return got


async def test_a_remembered_path_follows_new_revisions_and_removal() -> None:
    """A path admitted before is refused once a new revision drops its endpoint or the app
    goes, and reaches the new route once the app comes back."""
    backend = IdleBackend()
    scheduler = Scheduler(backend, SchedulerConfig())  # type: ignore[arg-type]
    router = Router(RouterConfig(port=0), LocalRegistry(), backend, scheduler)  # type: ignore[arg-type]
    router.add_app(APP, build_spec(Two))
    try:
        for _ in range(2):  # the second time from what the core remembered
            run = admit(router, "/o/two/b")
            assert isinstance(run, SyncRun) and run.target == b"/b"
            assert run.route is router.routes[APP]
        router.update_app(APP, build_spec(One))
        gone = admit(router, "/o/two/b")
        assert isinstance(gone, Reply) and gone.status == 404 and b"endpoint_not_found" in gone.body
        router.remove_app(APP)
        gone = admit(router, "/o/two/a")
        assert isinstance(gone, Reply) and gone.status == 404 and b"app_not_found" in gone.body
        router.add_app(APP, build_spec(Two))
        run = admit(router, "/o/two/b")
        assert isinstance(run, SyncRun) and run.route is router.routes[APP]
    finally:
        await asyncio.sleep(0)
        await router.stop(0.1)
