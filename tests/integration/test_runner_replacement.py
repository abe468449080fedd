"""What happens when a ready runner is killed while nothing waits for it (local backend)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import structlog
from fault_apps import AlwaysOne, KeptWarm

from support import served, wait_until

pytestmark = pytest.mark.timeout(180)


def started(logs: list[dict[str, object]]) -> list[object]:
    return [e["runner"] for e in logs if e["event"] == "runner_started"]


async def test_a_runner_min_concurrency_needs_is_replaced_at_once(tmp_path: Path) -> None:
    """kill -9 of the one ready runner min_concurrency keeps: a new one becomes ready."""
    async with served(AlwaysOne, tmp_path) as app:
        (first,) = await wait_until(app.healthy, what="the min_concurrency runner")
        _, body, _ = await app.post(json={})
        os.kill(body["pid"], signal.SIGKILL)

        def replaced() -> bool:
            return any(r.runner_id != first.runner_id for r in app.healthy())

        await wait_until(replaced, what="a replacement to become ready")
        status, again, _ = await app.post(json={})
        assert status == 200 and again["pid"] != body["pid"]


async def test_a_runner_kept_only_by_keep_alive_is_not_started_again(tmp_path: Path) -> None:
    """kill -9 of an idle keep_alive runner starts nothing; the next request starts one."""
    async with served(KeptWarm, tmp_path) as app:
        backend = app.platform.backend
        with structlog.testing.capture_logs() as logs:
            status, body, _ = await app.post(json={})
            assert status == 200
            os.kill(body["pid"], signal.SIGKILL)
            # Until nothing of it is left, nor of any runner started in its place.
            await wait_until(
                lambda: not backend.runners(app.app_id) and backend.target(app.app_id) == 0,
                what="the killed runner to be gone and the target to drop",
            )
            assert len(started(logs)) == 1
            assert any(e["event"] == "runner_not_replaced" for e in logs)
            status, again, _ = await app.post(json={})
        assert status == 200 and again["pid"] != body["pid"]
        assert len(started(logs)) == 2  # the first, and the one the request started
