"""The admin API on the local backend: deploy, redeploy, restart, and the errors it answers."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.config import ServerConfig
from yurt.deployment import deploy
from yurt.errors import ConfigError, DeployError
from yurt.packaging import pack, read_header
from yurt.platform import Platform
from yurt.runner.gpus import list_gpus, load_nvml
from yurt.spec import build_spec

from admin_apps import GpuGreeter, GreeterBroken, GreeterGated, GreeterV1, GreeterV2
from support import DEADLINE, fast_config, wait_until

API = "/_yurt/api/v1"


@asynccontextmanager
async def server(config: ServerConfig) -> AsyncIterator[Platform]:
    platform = Platform(config, server=True)
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()


async def call(url: str, text: str = "hi") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s,
        s.post(url, json={"prompt": text}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def greeting(url: str, expected: str) -> bool:
    status, body = await call(url)
    return status == 200 and body == {"text": expected}


async def test_deploy_redeploy_and_restart(tmp_path: Path) -> None:
    """A deployed app answers; a redeploy rolls it to the new code; a restart serves it again."""
    config = fast_config(tmp_path)
    async with server(config) as p:
        first = await asyncio.to_thread(deploy, GreeterV1, server=p.url)
        assert (first.app_id, first.outcome) == ("default/greeter", "created")
        assert first.url == f"{p.url}/default/greeter"
        assert await call(first.url) == (200, {"text": "v1: hi"})
        again = await asyncio.to_thread(deploy, GreeterV1, server=p.url)
        assert (again.outcome, again.revision) == ("unchanged", first.revision)
        second = await asyncio.to_thread(deploy, GreeterV2, server=p.url)
        assert second.outcome == "updated" and second.revision != first.revision
        await wait_until(lambda: greeting(first.url, "v2: hi"), what="the new revision")
        port = p.router.port
    restarted = config.model_copy(
        update={"router": config.router.model_copy(update={"port": port})}
    )
    async with server(restarted) as p:
        assert await call(f"{p.url}/default/greeter") == (200, {"text": "v2: hi"})
        async with aiohttp.ClientSession() as s, s.get(f"{p.url}{API}/apps/default/greeter") as r:
            app = await r.json()
        assert [rev["sha256"][:12] for rev in app["revisions"]] == [
            first.revision,
            second.revision,
        ]
        url = f"{p.url}{API}/apps/default/greeter/revisions"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert await r.json() == app["revisions"]


async def test_a_redeploy_keeps_the_old_runner_until_the_new_one_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the new revision loads, the old one answers; a revision that cannot start leaves
    the one before it serving."""
    gate = tmp_path / "gate"
    monkeypatch.setenv("YURT_TEST_GATE", str(gate))  # runners inherit the server's environment
    async with server(fast_config(tmp_path)) as p:
        first = await asyncio.to_thread(deploy, GreeterV1, server=p.url)
        assert await call(first.url) == (200, {"text": "v1: hi"})
        [old] = [r.runner_id for r in p.backend.runners(first.app_id)]
        second = await asyncio.to_thread(deploy, GreeterGated, server=p.url)
        assert second.outcome == "updated"

        def loading() -> bool:
            states = {r.runner_id: r.state.value for r in p.backend.runners(first.app_id)}
            return states.get(old) == "IDLE" and "SETUP" in states.values()

        await wait_until(loading, what="the new revision's runner in setup beside the old one")
        for _ in range(3):  # answered by the old revision, without waiting for the new one
            assert await call(first.url) == (200, {"text": "v1: hi"})
        gate.touch()
        await wait_until(lambda: greeting(first.url, "gated: hi"), what="the new revision")
        await wait_until(
            lambda: old not in {r.runner_id for r in p.backend.runners(first.app_id)},
            what="the old runner to stop",
        )

        third = await asyncio.to_thread(deploy, GreeterBroken, server=p.url)
        assert third.outcome == "updated"
        await wait_until(
            lambda: "CRASH_BACKOFF" in {r.state.value for r in p.backend.runners(first.app_id)},
            what="the broken revision to fail",
        )
        assert await call(first.url) == (200, {"text": "gated: hi"})


async def test_admin_token_is_required_when_set(tmp_path: Path) -> None:
    """With an admin token, deploys and listings without it get 401; with it they work."""
    config = fast_config(tmp_path).model_copy(update={"admin_token": "s3cret"})
    async with server(config) as p:
        with pytest.raises(DeployError, match="admin token"):
            await asyncio.to_thread(deploy, GreeterV1, server=p.url, token="wrong")
        async with aiohttp.ClientSession() as s, s.get(f"{p.url}{API}/apps") as r:
            assert r.status == 401
        done = await asyncio.to_thread(deploy, GreeterV1, server=p.url, token="s3cret")
        assert done.outcome == "created"


async def test_payload_download_takes_the_revision_token(tmp_path: Path) -> None:
    """A runner's token fetches its own payload, not another one; no token gets 401."""
    async with server(fast_config(tmp_path).model_copy(update={"admin_token": "adm"})) as p:
        await asyncio.to_thread(deploy, GreeterV1, server=p.url, token="adm")
        data = pack(GreeterV1)
        sha = read_header(data)[0].sha256
        url = f"{p.url}{API}/payloads/{sha}"
        async with aiohttp.ClientSession() as s:
            bearer = {"Authorization": f"Bearer {p.store.token(sha)}"}
            async with s.get(url, headers=bearer) as r:
                assert r.status == 200 and await r.read() == data
            other = {"Authorization": f"Bearer {p.store.token('0' * 64)}"}
            async with s.get(url, headers=other) as r:
                assert r.status == 401
            async with s.get(url) as r:
                assert r.status == 401


async def test_bad_uploads_and_deploys_are_refused(tmp_path: Path) -> None:
    """Wrong digest, junk, a bad spec field, an unknown payload and a huge body: each says why."""
    config = fast_config(tmp_path).model_copy(update={"max_payload_size": 1024 * 1024})
    async with server(config) as p, aiohttp.ClientSession() as s:
        data = pack(GreeterV1)
        sha = read_header(data)[0].sha256
        async with s.put(f"{p.url}{API}/payloads/{'1' * 64}", data=data) as r:
            assert r.status == 422 and "digest" in (await r.json())["detail"]
        async with s.put(f"{p.url}{API}/payloads/{sha}", data=b"junk") as r:
            assert r.status == 422 and "not a valid payload" in (await r.json())["detail"]
        async with s.put(
            f"{p.url}{API}/payloads/{sha}", data=io.BytesIO(b"x" * (2 * 1024 * 1024))
        ) as r:
            assert r.status == 413
        spec = json.loads(build_spec(GreeterV1).model_dump_json())
        spec["max_concurrency"] = "many"
        body = {"spec": spec, "payload_sha256": sha}
        async with s.post(f"{p.url}{API}/apps", json=body) as r:
            reply = await r.json()
            assert r.status == 422 and "spec.max_concurrency" in reply["fields"]
        body["spec"] = json.loads(build_spec(GreeterV1).model_dump_json())
        async with s.post(f"{p.url}{API}/apps", json=body) as r:
            assert r.status == 422 and "PUT it" in (await r.json())["detail"]
        async with s.get(f"{p.url}{API}/apps/default/nope") as r:
            assert r.status == 404


async def test_open_admin_api_beyond_loopback_is_refused(tmp_path: Path) -> None:
    """A server on 0.0.0.0 with no admin token does not start, and says what to set."""
    config = fast_config(tmp_path)
    config = config.model_copy(
        update={"router": config.router.model_copy(update={"host": "0.0.0.0"})}
    )
    with pytest.raises(ConfigError, match="--admin-token"):
        async with server(config):
            pass


async def test_deploy_to_nobody_names_the_fix() -> None:
    """No server listening: the error says how to start or point at one."""
    with pytest.raises(DeployError, match="yurt server"):
        await asyncio.to_thread(deploy, GreeterV1, server="http://127.0.0.1:9", timeout=5)


async def test_run_mode_serves_only_payload_downloads(tmp_path: Path) -> None:
    """Under yurt run the admin API deploys nothing, and payloads need their revision's token."""
    platform = Platform(fast_config(tmp_path))
    await platform.start(GreeterV1)
    try:
        data = pack(GreeterV1)
        sha = read_header(data)[0].sha256
        base = f"{platform.url}{API}"
        with pytest.raises(DeployError, match="yurt server"):
            await asyncio.to_thread(deploy, GreeterV2, server=platform.url, owner="evil")
        assert "evil/greeter" not in platform.router.routes
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/apps") as r:
                assert r.status == 404
            async with s.get(f"{base}/payloads/{sha}") as r:
                assert r.status == 401
            bearer = {"Authorization": f"Bearer {platform.store.token(sha)}"}
            async with s.get(f"{base}/payloads/{sha}", headers=bearer) as r:
                assert r.status == 200 and await r.read() == data
    finally:
        await platform.stop()


async def test_odd_tokens_and_routes_are_clean_refusals(tmp_path: Path) -> None:
    """A non-ASCII token is a 401, not a 500; unknown admin routes and versions are 404s."""
    config = fast_config(tmp_path).model_copy(update={"admin_token": "adm"})
    async with server(config) as p, aiohttp.ClientSession() as s:
        odd = {"Authorization": "Bearer caf\u00e9"}
        async with s.get(f"{p.url}{API}/apps", headers=odd) as r:
            assert r.status == 401
        async with s.get(f"{p.url}{API}/payloads/{'a' * 64}", headers=odd) as r:
            assert r.status == 401
        admin = {"Authorization": "Bearer adm"}
        async with s.get(f"{p.url}/_yurt/api/v2/apps", headers=admin) as r:
            assert r.status == 404
        await asyncio.to_thread(deploy, GreeterV1, server=p.url, token="adm")
        async with s.get(f"{p.url}{API}/apps/default/greeter/nope", headers=admin) as r:
            assert r.status == 404


async def test_a_failed_deploy_is_tried_again_in_full(tmp_path: Path) -> None:
    """The backend refusing a deploy is a 502 with its reason; the same deploy then succeeds."""
    async with server(fast_config(tmp_path)) as p:
        ensure = p.backend.ensure_app
        calls = 0

        async def refuse_once(*args: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise DeployError("the cluster said no")
            await ensure(*args)

        p.backend.ensure_app = refuse_once  # type: ignore[method-assign]
        with pytest.raises(DeployError, match=r"502.*the cluster said no"):
            await asyncio.to_thread(deploy, GreeterV1, server=p.url)
        done = await asyncio.to_thread(deploy, GreeterV1, server=p.url)
        assert done.outcome == "created" and calls == 2
        assert await call(done.url) == (200, {"text": "v1: hi"})


@pytest.mark.skipif(
    bool(list_gpus(load_nvml()).gpus), reason="this machine has GPUs: the deploy may succeed"
)
async def test_an_app_this_machine_cannot_serve_is_a_422(tmp_path: Path) -> None:
    """A GPU app deployed to a local server without that GPU is refused with the reason."""
    async with server(fast_config(tmp_path)) as p:
        with pytest.raises(DeployError, match=r"422.*GPU-H100"):
            await asyncio.to_thread(deploy, GpuGreeter, server=p.url)
        assert "default/gpu-greeter" not in p.router.routes
