"""The admin API's undeploy route: its errors, and payloads that two apps share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.config import ServerConfig
from yurt.deployment import deploy, undeploy
from yurt.errors import DeployError
from yurt.platform import Platform

from admin_apps import GreeterV1
from support import DEADLINE, fast_config

API = "/_yurt/api/v1"


@asynccontextmanager
async def server(config: ServerConfig) -> AsyncIterator[Platform]:
    platform = Platform(config, server=True)
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()


async def delete(url: str, token: str | None = None) -> tuple[int, Any, str | None]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s,
        s.delete(url, headers=headers) as resp,
    ):
        return (
            resp.status,
            await resp.json(content_type=None),
            resp.headers.get("x-yurt-error-type"),
        )


async def test_undeploy_route_needs_the_token_and_a_deployed_app(tmp_path: Path) -> None:
    """No token: 401; an unknown app: 404 ``app_not_found``; a deployed one: 200, then 404."""
    config = fast_config(tmp_path).model_copy(update={"admin_token": "adm"})
    async with server(config) as p:
        done = await asyncio.to_thread(deploy, GreeterV1, server=p.url, token="adm")
        url = f"{p.url}{API}/apps/default/greeter"
        status, body, _ = await delete(url)
        assert (status, body["error_type"]) == (401, "unauthorized")
        assert p.store.get("default/greeter") is not None  # untouched
        status, body, kind = await delete(f"{p.url}{API}/apps/default/nothing", "adm")
        assert (status, kind, body["error_type"]) == (404, "app_not_found", "app_not_found")
        assert "default/nothing" in body["detail"]
        assert await delete(url, "adm") == (
            200,
            {
                "app_id": "default/greeter",
                "revision": done.revision,
                "outcome": "undeployed",
                "failed_requests": 0,
            },
            None,
        )
        status, body, kind = await delete(url, "adm")
        assert (status, body["error_type"]) == (404, "app_not_found")
        with pytest.raises(DeployError, match="no app default/greeter deployed"):
            await asyncio.to_thread(undeploy, "greeter", server=p.url, token="adm")


async def test_a_payload_another_app_uses_stays(tmp_path: Path) -> None:
    """Two owners deploy the same code (one payload); undeploying one leaves the other serving,
    after a restart too, with the payload on disk."""
    config = fast_config(tmp_path)
    async with server(config) as p:
        mine = await asyncio.to_thread(deploy, GreeterV1, server=p.url, owner="me")
        theirs = await asyncio.to_thread(deploy, GreeterV1, server=p.url, owner="you")
        assert mine.revision == theirs.revision
        gone = await asyncio.to_thread(undeploy, "me/greeter", server=p.url)
        assert (gone.app_id, gone.revision) == ("me/greeter", mine.revision)
        payloads = [f.name[:12] for f in (tmp_path / "payloads").glob("*.yurt")]
        assert payloads == [mine.revision]
    async with server(config) as p:
        assert sorted(p.router.routes) == ["you/greeter"]
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{p.url}/you/greeter", json={"prompt": "hi"}) as resp,
        ):
            assert (resp.status, await resp.json()) == (200, {"text": "v1: hi"})
