"""Sync runs and the queue answer the same through both of the router's faces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps import Echo
from faces import FACES
from support import served

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("face", FACES)]


def events(body: bytes) -> list[dict[str, object]]:
    """The JSON events of a server-sent event stream."""
    return [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")
    ]


async def test_queue_submit_stream_result_and_cancel(tmp_path: Path, face: str) -> None:
    """A submission, its status stream, its result and a late cancel, through ``face``."""
    async with served(Echo, tmp_path, face=face) as app:
        sub = await app.submit(json={"prompt": "hi"})
        assert sub["status_url"].startswith(app.base)  # URLs name the host the caller used
        async with app.session.get(sub["status_url"] + "/stream") as resp:
            assert resp.status == 200
            assert resp.headers["content-type"] == "text/event-stream"
            assert resp.headers["x-fal-request-id"] == sub["request_id"]
            streamed = events(await resp.read())
        assert streamed[-1]["status"] == "COMPLETED"
        status, body, headers = await app.result(sub)
        assert (status, body) == (200, {"text": "echo: hi"})
        assert headers["x-fal-request-id"] == sub["request_id"]
        async with app.session.put(sub["cancel_url"]) as resp:
            assert (resp.status, await resp.json()) == (400, {"status": "ALREADY_COMPLETED"})
        web = app.platform.router._web
        assert web is not None
        # The relay's connections are the aiohttp face's; the fast lane's never reach it.
        assert bool(web.connections) == (face == "handed")


async def test_get_on_an_endpoint_is_405_and_unknown_queue_route_404(
    tmp_path: Path, face: str
) -> None:
    """Endpoints take POST, and the queue names its routes, on either face."""
    async with served(Echo, tmp_path, face=face) as app:
        async with app.session.get(app.url) as resp:
            assert resp.status == 405
            assert (await resp.json())["error_type"] == "method_not_allowed"
        async with app.session.get(f"{app.base}/queue/{app.app_id}/nothing") as resp:
            assert resp.status == 404
            assert (await resp.json())["error_type"] == "not_found"
