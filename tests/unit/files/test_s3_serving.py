"""The router's file routes over a bucket that fails mid-file: the reply is cut, not doubled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from yurt.config import FilesConfig, RouterConfig, S3Config
from yurt.files.http import FilesApi
from yurt.files.s3 import Body, S3Store, S3Unavailable
from yurt.files.store import StoredFile

RECORD = StoredFile(
    token="T" * 32,
    sha256="ab" * 32,
    content_type="video/mp4",
    file_name="clip.mp4",
    file_size=3000,
    created=0.0,
    expires_at=None,
)


class CutBody:
    """Gives 1000 bytes, then fails as a bucket that stopped answering."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        self.reads += 1
        if self.reads == 1:
            return b"x" * 1000
        raise S3Unavailable("GetObject on bucket outputs: ReadTimeoutError")

    def close(self) -> None:
        self.closed = True


class CutStore(S3Store):
    """A bucket store whose one file breaks off after its first chunk."""

    def __init__(self, tmp: Path) -> None:
        config = S3Config(bucket="outputs", access_key_id="k", secret_access_key="s")
        super().__init__(config, tmp, client=object())
        self.bodies: list[CutBody] = []

    def get(self, token: str, now: float | None = None) -> StoredFile | None:
        return RECORD if token == RECORD.token else None

    def open(self, record: StoredFile, first: int = 0, last: int | None = None) -> Body | None:
        self.bodies.append(CutBody())
        return self.bodies[-1]


@asynccontextmanager
async def serving(api: FilesApi) -> AsyncIterator[str]:
    runner = web.ServerRunner(web.Server(api.handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await api.stop()
        await runner.cleanup()


async def test_a_bucket_failing_mid_file_cuts_the_connection(tmp_path: Path) -> None:
    """Once the head is sent, a failing bucket ends the reply short (the client sees a
    truncated body, not a second reply in it), the body is closed, and the next request on a
    new connection is served."""
    store = CutStore(tmp_path)
    api = FilesApi(store, FilesConfig(), RouterConfig())
    timeout = aiohttp.ClientTimeout(total=30)  # a reply never ended must fail, not hang
    async with serving(api) as base, aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{base}/files/{RECORD.token}/clip.mp4"
        for _ in range(2):
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["content-length"] == "3000"
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        assert [b.closed for b in store.bodies] == [True, True]
        async with session.get(f"{base}/files/{'U' * 32}/x") as resp:
            assert resp.status == 404
