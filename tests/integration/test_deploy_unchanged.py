"""``yurt deploy`` from separate processes: the same code is the same revision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.platform import Platform

from support import DEADLINE, fast_config, yurt_command

pytestmark = pytest.mark.timeout(180)

API = "/_yurt/api/v1"
TARGET = "tests/integration/admin_apps.py::GreeterV1"


async def deploy_in_a_new_process(url: str) -> dict[str, Any]:
    """``yurt deploy --json`` of GreeterV1, in a process of its own; its JSON answer."""
    code, out, err = await yurt_command("deploy", TARGET, "--server", url, "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


async def test_unchanged_deploy_from_another_process_rolls_nothing(tmp_path: Path) -> None:
    """A second ``yurt deploy`` of unchanged code answers "unchanged" and adds no revision."""
    platform = Platform(fast_config(tmp_path), server=True)
    await platform.start()
    try:
        first = await deploy_in_a_new_process(platform.url)
        again = await deploy_in_a_new_process(platform.url)
        assert first["outcome"] == "created"
        assert (again["outcome"], again["revision"]) == ("unchanged", first["revision"])
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{platform.url}{API}/apps/default/greeter/revisions") as resp,
        ):
            revisions = await resp.json()
        assert resp.status == 200
        assert [r["sha256"][:12] for r in revisions] == [first["revision"]]
    finally:
        await platform.stop()
