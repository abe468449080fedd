"""examples/playground_demo.py served by ``yurt run``, called over HTTP the way the playground's
script calls it: an upload, a queued run to an image, logs and a cancel, a 422, a stream."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from support import DEADLINE, ROOT, running_yurt, wait_until

pytestmark = pytest.mark.timeout(240)

TARGET = f"{ROOT / 'examples' / 'playground_demo.py'}::PlaygroundDemo"
READY = r"serving \S+ at (http://\S+)"


@asynccontextmanager
async def demo(tmp_path: Path) -> AsyncIterator[tuple[str, str, aiohttp.ClientSession]]:
    """The demo app under ``yurt run``: (router base URL, app id, session)."""
    args = ["run", TARGET, "--port", "0", "--data-dir", str(tmp_path / "data")]
    async with running_yurt(args, tmp_path / "yurt.log", READY) as url:
        base, _, app_id = url.partition("/default/")
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield base, "default/" + app_id.strip("/"), session


async def submit(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with s.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        request_id: str = (await resp.json())["request_id"]
        return request_id


async def completed(s: aiohttp.ClientSession, requests: str, request_id: str) -> dict[str, Any]:
    """The status stream with logs, read to its COMPLETED event."""
    last: dict[str, Any] = {}
    async with s.get(f"{requests}/{request_id}/status/stream?logs=1") as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                last = json.loads(line[6:])
    assert last["status"] == "COMPLETED"
    return last


async def test_an_uploaded_image_comes_back_transformed(tmp_path: Path) -> None:
    """The file store takes the upload; the queued run returns an image of the width asked."""
    picture = io.BytesIO()
    Image.new("RGB", (200, 100), "orange").save(picture, format="png")
    async with demo(tmp_path) as (base, app, s):
        headers = {"content-type": "image/png", "x-fal-file-name": "in.png"}
        async with s.post(f"{base}/files/upload", data=picture.getvalue(), headers=headers) as r:
            assert r.status == 200
            url = (await r.json())["url"]
        body = {"caption": "hi", "size": 100, "filter": "invert", "image": url}
        request_id = await submit(s, f"{base}/queue/{app}", body)
        requests = f"{base}/queue/{app}/requests"
        await completed(s, requests, request_id)
        async with s.get(f"{requests}/{request_id}") as resp:
            assert resp.status == 200
            image = (await resp.json())["image"]
        assert image["content_type"] == "image/png"
        async with s.get(image["url"]) as resp:
            assert Image.open(io.BytesIO(await resp.read())).size == (100, 50)
        # Out of bounds: a 422 whose loc names the field, as the page shows it.
        request_id = await submit(s, f"{base}/queue/{app}", {**body, "size": 9999})
        await completed(s, requests, request_id)
        async with s.get(f"{requests}/{request_id}") as resp:
            assert resp.status == 422
            (entry,) = (await resp.json())["detail"]
            assert entry["loc"][-1] == "size"


async def test_a_slow_request_logs_and_is_cancelled(tmp_path: Path) -> None:
    """/slow's log lines reach the status while it runs; a cancel ends it as cancelled."""
    async with demo(tmp_path) as (base, app, s):
        requests = f"{base}/queue/{app}/requests"
        request_id = await submit(s, f"{base}/queue/{app}/slow", {"seconds": 120, "steps": 60})

        async def logged() -> list[str]:
            async with s.get(f"{requests}/{request_id}/status?logs=1") as resp:
                return [entry["message"] for entry in (await resp.json())["logs"] or []]

        lines = await wait_until(logged, what="a log line")
        assert lines[0] == "step 1 of 60"
        async with s.put(f"{requests}/{request_id}/cancel") as resp:
            assert resp.status == 202
        last = await completed(s, requests, request_id)
        assert last["error_type"] == "client_cancelled"


async def test_the_stream_endpoint_sends_its_events_on_the_sync_path(tmp_path: Path) -> None:
    """/stream answers server-sent events, one per step, read as they come."""
    async with demo(tmp_path) as (base, app, s):
        async with s.post(f"{base}/{app}/stream", json={"upto": 3, "interval": 0}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) async for line in resp.content if line[:6] == b"data: "]
        assert events == [{"i": 0, "of": 3}, {"i": 1, "of": 3}, {"i": 2, "of": 3}]
