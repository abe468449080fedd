"""``yurt undeploy`` on the local backend: a real ``yurt server``, real ``yurt deploy`` and
``yurt undeploy`` commands, real runner processes."""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support import DEADLINE, running_yurt, wait_until, yurt_command

APPS = "tests/integration/undeploy_apps.py"
API = "/_yurt/api/v1"
# A runner stuck in setup() ignores SIGTERM: it is killed kill_after seconds past its grace.
CONFIG = """
[scheduler]
interval = 0.1

[local]
kill_after = 1.0
"""

pytestmark = pytest.mark.timeout(300)


def yurt_server(tmp_path: Path, name: str) -> AbstractAsyncContextManager[str]:
    """``yurt server`` on the local backend with its data in ``tmp_path/data``."""
    config = tmp_path / "yurt.toml"
    config.write_text(CONFIG)
    args = ["server", "--port", "0", "--data-dir", str(tmp_path / "data"), "--config", str(config)]
    return running_yurt(args, tmp_path / f"{name}.out", r"server at (http://\S+)")


async def deploy(base: str, cls: str) -> dict[str, Any]:
    code, out, err = await yurt_command("deploy", f"{APPS}::{cls}", "--server", base, "--json")
    assert code == 0, err
    reply: dict[str, Any] = json.loads(out)
    return reply


async def fetch(
    s: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any, str | None]:
    """(status, decoded JSON, X-Yurt-Error-Type)."""
    async with s.request(method, url, json=body) as resp:
        return (
            resp.status,
            await resp.json(content_type=None),
            resp.headers.get("x-yurt-error-type"),
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_undeploy_stops_routing_and_runners_and_is_forgotten(tmp_path: Path) -> None:
    """After ``yurt undeploy`` the app answers as an unknown app does, its runners are gone,
    its completed results stay readable, its payload goes, and a restart does not serve it;
    another app keeps serving and keeps its payload."""
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path, "first") as base, aiohttp.ClientSession(timeout=timeout) as s:
        quick = await deploy(base, "Quick")
        stays = await deploy(base, "Stays")
        assert (await fetch(s, "POST", quick["url"], {"prompt": "hi"}))[:2] == (
            200,
            {"text": "quick: hi"},
        )
        status, sub, _ = await fetch(s, "POST", quick["queue_url"], {"prompt": "queued"})
        assert status == 200, sub

        async def completed() -> bool:
            code, body, _ = await fetch(s, "GET", sub["status_url"])
            return code == 200 and body["status"] == "COMPLETED"

        await wait_until(completed, what="the queued request")
        async with s.get(f"{base}/_yurt/apps") as resp:
            apps = {a["app_id"]: a for a in await resp.json()}
        pids = [r["pid"] for r in apps["default/quick"]["runners"] if r["pid"]]
        assert pids and all(alive(p) for p in pids)

        code, out, err = await yurt_command("undeploy", "default/quick", "--server", base, "--json")
        assert code == 0, err
        assert json.loads(out) == {
            "app_id": "default/quick",
            "revision": quick["revision"],
            "failed_requests": 0,
        }

        # Routing: the same 404 as an app never deployed, in both faces.
        unknown = await fetch(s, "POST", f"{base}/default/never", {"prompt": "hi"})
        assert unknown[0] == 404 and unknown[2] == "app_not_found"
        gone = await fetch(s, "POST", quick["url"], {"prompt": "hi"})
        assert (gone[0], gone[2], gone[1]["error_type"]) == (404, "app_not_found", "app_not_found")
        queued = await fetch(s, "POST", quick["queue_url"], {"prompt": "hi"})
        assert (queued[0], queued[2]) == (404, "app_not_found")
        # Runners: stopped (the command returns once they have exited).
        assert not any(alive(p) for p in pids)
        async with s.get(f"{base}/_yurt/apps") as resp:
            assert [a["app_id"] for a in await resp.json()] == ["default/stays"]
        # The result of a request completed before stays readable.
        async with s.get(sub["response_url"]) as resp:
            assert (resp.status, await resp.json()) == (200, {"text": "quick: queued"})
        # The store: forgotten, with its payload; the other app and its payload stay.
        listing = await fetch(s, "GET", f"{base}{API}/apps")
        assert [a["app_id"] for a in listing[1]] == ["default/stays"]
        payloads = [p.name[:12] for p in (tmp_path / "data" / "payloads").glob("*.yurt")]
        assert payloads == [stays["revision"]]
        assert (await fetch(s, "POST", stays["url"], {"prompt": "x"}))[:2] == (
            200,
            {"text": "stays: x"},
        )
        # A second undeploy: the server has no such app any more.
        code, _, err = await yurt_command("undeploy", "default/quick", "--server", base)
        assert code == 1 and "no app default/quick deployed" in err, err

    async with yurt_server(tmp_path, "second") as base, aiohttp.ClientSession(timeout=timeout) as s:
        assert (await fetch(s, "POST", f"{base}/default/quick", {"prompt": "hi"}))[2] == (
            "app_not_found"
        )
        assert (await fetch(s, "POST", f"{base}/default/stays", {"prompt": "y"}))[:2] == (
            200,
            {"text": "stays: y"},
        )
        listing = await fetch(s, "GET", f"{base}{API}/apps")
        assert [a["app_id"] for a in listing[1]] == ["default/stays"]


async def test_undeploy_fails_the_requests_waiting_for_a_runner(tmp_path: Path) -> None:
    """Requests waiting for a runner of the app, direct or queued, fail with 410
    ``app_undeployed``; its runner stuck in setup() is stopped."""
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path, "server") as base, aiohttp.ClientSession(timeout=timeout) as s:
        stuck = await deploy(base, "Stuck")
        status, sub, _ = await fetch(s, "POST", stuck["queue_url"], {"prompt": "queued"})
        assert status == 200, sub
        direct = asyncio.ensure_future(fetch(s, "POST", stuck["url"], {"prompt": "direct"}))

        async def waiting() -> list[int] | None:
            async with s.get(f"{base}/_yurt/apps") as resp:
                app = {a["app_id"]: a for a in await resp.json()}["default/stuck"]
            pids = [r["pid"] for r in app["runners"] if r["pid"] and r["state"] == "SETUP"]
            return pids if app["waiting"] == 2 and pids else None

        pids = await wait_until(waiting, what="a direct and a queued request waiting")
        code, out, err = await yurt_command("undeploy", "stuck", "--server", base)  # default owner
        assert code == 0, err
        assert "undeployed default/stuck" in out and "2 waiting requests failed" in out, out

        status, body, kind = await direct
        assert (status, kind, body["error_type"]) == (410, "app_undeployed", "app_undeployed")
        assert "undeployed" in body["detail"]
        code, final, _ = await fetch(s, "GET", sub["status_url"])
        assert (code, final["status"], final["error_type"]) == (200, "COMPLETED", "app_undeployed")
        status, result, kind = await fetch(s, "GET", sub["response_url"])
        assert (status, kind, result["error_type"]) == (410, "app_undeployed", "app_undeployed")
        assert not any(alive(p) for p in pids)


async def test_requests_running_at_undeploy_finish_within_the_grace_period(tmp_path: Path) -> None:
    """A request running on a runner at undeploy finishes there within the app's grace period,
    sync or queued; one its runner cannot finish (no grace) completes with ``app_undeployed``
    rather than waiting for a runner that never comes."""
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path, "server") as base, aiohttp.ClientSession(timeout=timeout) as s:
        patient = await deploy(base, "Patient")
        hasty = await deploy(base, "Hasty")
        for app in (patient, hasty):  # a runner up, so that the next requests run at once
            assert (await fetch(s, "POST", app["url"], {"seconds": 0}))[0] == 200
        direct = asyncio.ensure_future(fetch(s, "POST", patient["url"], {"seconds": 2}))
        subs = {}
        for app in (patient, hasty):
            status, subs[app["app_id"]], _ = await fetch(
                s, "POST", app["queue_url"], {"seconds": 2 if app is patient else 600}
            )
            assert status == 200

        async def running() -> bool:
            async with s.get(f"{base}/_yurt/apps") as resp:
                apps = {a["app_id"]: a for a in await resp.json()}
            return (
                apps["default/patient"]["in_flight"] == 2
                and apps["default/hasty"]["in_flight"] == 1
            )

        await wait_until(running, what="three requests running")
        for app in ("default/patient", "default/hasty"):
            code, _, err = await yurt_command("undeploy", app, "--server", base)
            assert code == 0, err

        assert (await direct)[:2] == (200, {"text": "waited 2.0"})
        status, result, _ = await fetch(s, "GET", subs["default/patient"]["response_url"])
        assert (status, result) == (200, {"text": "waited 2.0"})
        status, result, kind = await fetch(s, "GET", subs["default/hasty"]["response_url"])
        assert (status, kind, result["error_type"]) == (410, "app_undeployed", "app_undeployed")
