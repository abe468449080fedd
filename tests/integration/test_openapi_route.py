"""``GET /{owner}/{app}/openapi.json`` at the router: answered from the app's spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi_apps import FastApiStyle

from support import served

pytestmark = pytest.mark.timeout(120)


async def test_router_answers_openapi_without_starting_a_runner(tmp_path: Path) -> None:
    """The document comes from the spec: every endpoint is described and no runner starts."""
    async with served(FastApiStyle, tmp_path) as app:
        async with app.session.get(app.url + "/openapi.json") as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("application/json")
            doc = await resp.json()
        assert doc["info"]["title"] == "fast-api-style"
        assert set(doc["paths"]) >= {"/", "/two", "/dict", "/stream", "/echo"}
        assert app.live_runners() == []
        # An unknown app is still the router's 404.
        async with app.session.get(app.platform.url + "/nobody/none/openapi.json") as resp:
            assert resp.status == 404
