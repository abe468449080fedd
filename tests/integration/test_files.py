"""Toolkit outputs through the file store: URLs that serve the bytes, ranges, expiry, uploads."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from toolkit_apps import Filmmaker, Painter, Reader, clip_bytes, painting

from yurt.app import App
from yurt.client import Client
from yurt.config import FilesConfig
from yurt.platform import Platform

from support import DEADLINE, Served, fast_config, wait_until

pytestmark = pytest.mark.timeout(180)


@asynccontextmanager
async def serving(
    cls: type[App], data_dir: Path, files: FilesConfig | None = None
) -> AsyncIterator[Served]:
    """``cls`` served with the file store configured by ``files``."""
    config = fast_config(data_dir).model_copy(update={"files": files or FilesConfig()})
    platform = Platform(config)
    await platform.start()
    try:
        app_id = await platform.add_app(cls)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
            yield Served(platform, app_id, s)
    finally:
        await platform.stop()


async def fetch(app: Served, url: str, **kw: Any) -> tuple[int, bytes, Any]:
    async with app.session.get(url, **kw) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_image_from_pil_serves_the_png_sync_and_queued(tmp_path: Path) -> None:
    """``Image.from_pil`` gives, through sync and queue, an absolute URL serving that PNG."""
    async with serving(Painter, tmp_path / "data") as app:
        status, body, _ = await app.post(json={"color": "teal", "image_size": "square"})
        assert status == 200, body
        image = body["image"]
        assert image["url"].startswith(f"{app.platform.url}/files/")
        expected = painting("teal", 512, 512)
        assert image | {"url": ""} == {
            "url": "",
            "content_type": "image/png",
            "file_name": image["file_name"],
            "file_size": len(expected),
            "width": 512,
            "height": 512,
        }
        code, data, headers = await fetch(app, image["url"])
        assert (code, headers["content-type"], data) == (200, "image/png", expected)

        sub = await app.submit(json={"color": "teal", "image_size": {"width": 7, "height": 5}})
        await app.completed(sub)
        code, result, _ = await app.result(sub)
        assert code == 200
        queued = result["image"]
        assert (queued["width"], queued["height"]) == (7, 5)
        code, data, headers = await fetch(app, queued["url"])
        assert (code, headers["content-type"], data) == (200, "image/png", painting("teal", 7, 5))


async def test_range_request_on_a_stored_video(tmp_path: Path) -> None:
    """A video output answers a Range request with 206 and exactly the bytes asked for."""
    async with serving(Filmmaker, tmp_path / "data") as app:
        status, body, _ = await app.post(json={"size": 100_000})
        assert status == 200, body
        url = body["video"]["url"]
        assert body["video"]["content_type"] == "video/mp4"
        code, data, headers = await fetch(app, url, headers={"Range": "bytes=1000-1999"})
        assert code == 206
        assert data == clip_bytes(100_000)[1000:2000]
        assert headers["content-range"] == "bytes 1000-1999/100000"
        assert headers["content-type"] == "video/mp4"
        code, data, _ = await fetch(app, url, headers={"Range": "bytes=-10"})
        assert (code, data) == (206, clip_bytes(100_000)[-10:])
        async with app.session.head(url) as resp:
            assert (resp.status, resp.headers["content-length"]) == (200, "100000")
            assert resp.headers["accept-ranges"] == "bytes"
            assert "sandbox" in resp.headers["content-security-policy"]


async def test_unknown_and_malformed_file_urls_are_404(tmp_path: Path) -> None:
    """A guessed token or a path that is not a file URL is a JSON 404."""
    async with serving(Filmmaker, tmp_path / "data") as app:
        for path in ("/files/" + "A" * 32 + "/clip.mp4", "/files/nope", "/files/x/y/z"):
            async with app.session.get(app.platform.url + path) as resp:
                assert resp.status == 404
                assert (await resp.json())["error_type"] == "not_found"


async def test_expired_files_answer_404_and_are_deleted(tmp_path: Path) -> None:
    """Past its ttl a file answers 404, and the sweeper deletes its bytes from disk."""
    files = FilesConfig(ttl=5.0, sweep_interval=0.1)
    async with serving(Filmmaker, tmp_path / "data", files) as app:
        status, body, _ = await app.post(json={"size": 1000})
        assert status == 200, body
        url = body["video"]["url"]
        code, _, _ = await fetch(app, url)
        assert code == 200
        blobs = tmp_path / "data" / "files" / "blobs"
        assert [p for p in blobs.rglob("*") if p.is_file()]

        async def gone() -> bool:
            code, _, _ = await fetch(app, url)
            return code == 404

        await wait_until(gone, what="the file to expire")
        await wait_until(
            lambda: not [p for p in blobs.rglob("*") if p.is_file()], what="the blob to go"
        )


async def test_upload_then_pass_the_url_to_an_app(tmp_path: Path) -> None:
    """yurt's Client uploads a file; an app given its URL reads the same bytes."""
    source = tmp_path / "input.bin"
    source.write_bytes(b"yurt" * 50_000)
    async with serving(Reader, tmp_path / "data") as app:

        def upload() -> tuple[str, Any]:
            with Client(app.platform.url) as client:
                url = client.upload_file(source)
                return url, client.run(app.app_id, {"file": url})

        url, reply = await asyncio.to_thread(upload)
        assert url.startswith(f"{app.platform.url}/files/") and url.endswith("/input.bin")
        assert reply == {"size": 200_000, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
        code, data, headers = await fetch(app, url)
        assert (code, data, headers["content-type"]) == (
            200,
            source.read_bytes(),
            "application/octet-stream",
        )


async def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    """An upload larger than ``max_upload_size`` is refused with 413, and nothing is kept."""
    async with serving(Reader, tmp_path / "data", FilesConfig(max_upload_size=1000)) as app:
        async with app.session.post(app.platform.url + "/files/upload", data=b"x" * 1001) as resp:
            assert resp.status == 413
            assert (await resp.json())["error_type"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while read
            for _ in range(5):
                yield b"x" * 300

        async with app.session.post(app.platform.url + "/files/upload", data=chunks()) as resp:
            assert resp.status == 413
        refs = tmp_path / "data" / "files" / "refs"
        assert not list(refs.glob("*.json"))


async def test_a_runner_without_the_store_on_disk_uploads_over_http(tmp_path: Path) -> None:
    """Given only YURT_FILES_URL (no shared disk, as on a cluster), outputs are posted to the
    router's upload route and served from there."""
    source = tmp_path / "take.wav"
    source.write_bytes(b"RIFF" + bytes(range(256)) * 400)
    code = (
        "import sys; from yurt.toolkit import Audio, File; "
        "print(File.from_bytes(b'small', file_name='s.txt').url); "
        "print(Audio.from_path(sys.argv[1]).url)"
    )
    async with serving(Reader, tmp_path / "data") as app:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("YURT_FILES", "YURT_APP"))}
        env["YURT_FILES_URL"] = app.platform.url
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, str(source), env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
        assert proc.returncode == 0
        small, audio = out.decode().split()
        assert (await fetch(app, small))[:2] == (200, b"small")
        status, data, headers = await fetch(app, audio)
        assert (status, data) == (200, source.read_bytes())
        assert headers["content-type"] == mimetypes.guess_type("take.wav")[0]


async def test_uploads_need_a_key_once_the_server_has_one(tmp_path: Path) -> None:
    """With a key made, an upload without one is 401; yurt's Client with the key uploads."""
    source = tmp_path / "in.txt"
    source.write_bytes(b"keyed")
    async with serving(Reader, tmp_path / "data") as app:
        async with app.session.post(app.platform.url + "/files/upload", data=b"open") as resp:
            assert resp.status == 200  # loopback, no key yet: open, as the apps are
        _, key = app.platform.keys.create("API", None, time.time())
        async with app.session.post(app.platform.url + "/files/upload", data=b"no") as resp:
            assert resp.status == 401
            assert (await resp.json())["error_type"] == "unauthorized"

        def upload() -> str:
            with Client(app.platform.url, key=key) as client:
                return client.upload_file(source)

        url = await asyncio.to_thread(upload)
        assert (await fetch(app, url))[:2] == (200, b"keyed")  # reading needs no key
