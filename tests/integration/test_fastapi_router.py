"""fal-style endpoints through the router, on the sync path and through the queue."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi_apps import FastApiStyle

from support import served

pytestmark = pytest.mark.timeout(120)


async def test_sync_path_keeps_fastapi_semantics(tmp_path: Path) -> None:
    """Through the router: the injected Response's header reaches the caller, HTTPException and
    FieldException keep their status and body, and the app never sees the runner's token."""
    async with served(FastApiStyle, tmp_path) as app:
        status, body, headers = await app.post("/", json={"prompt": "hi", "steps": 4})
        assert (status, body) == (200, {"text": "hi (True)"})
        assert headers["x-fal-billable-units"] == "4"
        status, body, _ = await app.post("/http-exception", json={"prompt": "tea"})
        assert (status, body) == (418, {"detail": {"why": "tea"}})
        status, body, _ = await app.post("/field", json={"prompt": "x"})
        assert status == 422
        assert body == {
            "detail": [{"loc": ["body", "prompt"], "msg": "too dull", "type": "value_error"}]
        }
        status, seen, _ = await app.post("/headers", json={}, headers={"x-mine": "1"})
        assert status == 200
        assert seen["x-mine"] == "1"
        assert "x-yurt-runner-token" not in seen


async def test_queue_runs_fastapi_endpoints(tmp_path: Path) -> None:
    """Through the queue: several body parameters, and FieldException's 422 as the result."""
    async with served(FastApiStyle, tmp_path) as app:
        two = {"prompt": {"prompt": "p"}, "style": {"name": "bold"}}
        sub = await app.submit("/two", json=two)
        await app.completed(sub)
        status, body, _ = await app.result(sub)
        assert (status, body) == (200, {"text": "bold: p"})
        sub = await app.submit("/field", json={"prompt": "x"})
        await app.completed(sub)
        status, body, _ = await app.result(sub)
        assert status == 422
        assert body["detail"][0]["loc"] == ["body", "prompt"]
