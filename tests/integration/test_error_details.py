"""What a caller is told when a runner fails to start: the runner id, never a server path."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from fault_apps import BrokenSetup

from yurt.config import BackoffConfig
from yurt.platform import Platform

from support import DEADLINE, fast_config

pytestmark = pytest.mark.timeout(180)


async def test_a_setup_failure_names_the_runner_not_its_log_file(tmp_path: Path) -> None:
    """The 503 detail names the runner id and no data-dir path; /_yurt/apps has the log."""
    config = fast_config(tmp_path)
    # A long backoff: its entry in /_yurt/apps stays while the test reads it.
    local = config.local.model_copy(update={"backoff": BackoffConfig(step=600, cap=600)})
    platform = Platform(config.model_copy(update={"local": local}))
    (app_id,) = await platform.start(BrokenSetup)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
            async with s.post(f"{platform.url}/{app_id}", json={}) as resp:
                assert resp.status == 503
                body = await resp.json()
                assert resp.headers["x-yurt-error-type"] == "runner_scheduling_failure"
            async with s.get(f"{platform.url}/_yurt/apps") as resp:
                (entry,) = (await resp.json())[0]["runners"]
    finally:
        await platform.stop()
    assert body["error_type"] == "runner_scheduling_failure"
    detail = body["detail"]
    assert "RuntimeError: no weights to load" in detail
    assert str(tmp_path) not in detail and ".log" not in detail
    found = re.search(r"\(runner (r-[0-9a-f]+)\)", detail)
    assert found, detail
    (log,) = (tmp_path / "logs").glob(f"*-{found.group(1)}.log")
    assert "no weights to load" in log.read_text()
    assert entry["state"] == "CRASH_BACKOFF"
    assert str(log) in entry["detail"] and found.group(1) in entry["detail"]
