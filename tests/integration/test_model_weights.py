"""``download_model_weights`` against a loopback HTTP server: once per app, resumed when cut."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from yurt.toolkit import DownloadError, download_model_weights

from support import DEADLINE, wait_until

pytestmark = pytest.mark.timeout(120)

WEIGHTS = bytes(i % 253 for i in range(3 * 1024 * 1024))


class WeightsServer:
    """Serves ``WEIGHTS`` at ``/model.safetensors``, honouring ``Range``; counts requests.

    ``hold`` keeps each response from starting until set; ``cut_after`` makes the first
    response end its connection after that many bytes.
    """

    def __init__(self, cut_after: int | None = None) -> None:
        self.requests: list[str | None] = []  # the Range header of each
        self.hold = asyncio.Event()
        self.hold.set()
        self.cut_after = cut_after
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.headers.get("Range"))
        await self.hold.wait()
        start = 0
        if (ask := request.headers.get("Range")) is not None:
            start = int(ask.removeprefix("bytes=").rstrip("-"))
        body = WEIGHTS[start:]
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(body)
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
        await resp.prepare(request)
        if self.cut_after is not None and len(self.requests) == 1:
            await resp.write(body[: self.cut_after])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp


@asynccontextmanager
async def weights_server(cut_after: int | None = None) -> AsyncIterator[WeightsServer]:
    server = WeightsServer(cut_after)
    app = web.Application()
    app.router.add_get("/model.safetensors", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/model.safetensors"
    try:
        yield server
    finally:
        await runner.cleanup()


def waiting_on(lock: Path) -> int:
    """How many processes wait for the flock on ``lock`` (``/proc/locks``, ``->`` lines)."""
    ino = lock.stat().st_ino
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line and line.split()[6].endswith(f":{ino}"))


async def fetch_in_process(data: Path, url: str) -> asyncio.subprocess.Process:
    """A process that calls ``download_model_weights(url)`` as a runner of the app would."""
    code = "import sys; from yurt.toolkit import download_model_weights as d; print(d(sys.argv[1]))"
    env = {**os.environ, "YURT_APP_DATA_DIR": str(data)}
    env.pop("FAL_MODEL_WEIGHTS_DIR", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url, env=env, stdout=asyncio.subprocess.PIPE
    )


async def test_two_runners_at_once_download_once(tmp_path: Path) -> None:
    """Two processes of one app asking for the same weights at once fetch them once."""
    data = tmp_path / "appdata"
    async with weights_server() as server:
        server.hold.clear()
        first = await fetch_in_process(data, server.url)
        await wait_until(lambda: len(server.requests) == 1, DEADLINE, "the first request")
        second = await fetch_in_process(data, server.url)
        lock = next((data / ".fal" / "model_weights").glob("*.lock"))
        await wait_until(lambda: waiting_on(lock) == 1, DEADLINE, "the second to wait its turn")
        server.hold.set()
        outs = [await asyncio.wait_for(p.communicate(), DEADLINE) for p in (first, second)]
        assert [p.returncode for p in (first, second)] == [0, 0]
        paths = {out.decode().strip() for out, _ in outs}
        assert len(paths) == 1
        path = Path(paths.pop())
        assert path.name == "model.safetensors"
        assert path.is_relative_to(data / ".fal" / "model_weights")
        assert await asyncio.to_thread(path.read_bytes) == WEIGHTS
        assert server.requests == [None]


async def test_a_download_cut_short_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download cut mid-body fails with DownloadError; the next asks only for the rest."""
    monkeypatch.setenv("YURT_APP_DATA_DIR", str(tmp_path / "appdata"))
    monkeypatch.delenv("FAL_MODEL_WEIGHTS_DIR", raising=False)
    half = len(WEIGHTS) // 2
    async with weights_server(cut_after=half) as server:
        with pytest.raises(DownloadError, match="cut short"):
            await asyncio.to_thread(download_model_weights, server.url)
        path = await asyncio.to_thread(download_model_weights, server.url)
        assert await asyncio.to_thread(path.read_bytes) == WEIGHTS
        assert server.requests[0] is None
        assert server.requests[1] is not None
        assert server.requests[1].startswith("bytes=") and server.requests[1] != "bytes=0-"
        # Cached: asked again, nothing is fetched.
        assert await asyncio.to_thread(download_model_weights, server.url) == path
        assert len(server.requests) == 2
