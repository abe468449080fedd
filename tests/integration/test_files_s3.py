"""The file store in an S3-compatible bucket: moto's S3 server on loopback, real runners."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from moto.server import ThreadedMotoServer
from test_file_upload_memory import Peak, rss
from toolkit_apps import Filmmaker, Painter, Reader, clip_bytes, painting

from yurt.app import App
from yurt.client import Client
from yurt.config import FilesConfig, S3Config
from yurt.errors import ConfigError
from yurt.platform import Platform

from support import DEADLINE, Served, fast_config, start_yurt, wait_until

pytestmark = pytest.mark.timeout(180)

SECRET = "moto-secret-" + uuid.uuid4().hex


class Bucket:
    """A bucket of moto's S3 server, and a client to look into it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"yurt-{uuid.uuid4().hex[:12]}"  # moto keeps buckets for the process
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="moto-key",
            aws_secret_access_key=SECRET,
        )
        self.client.create_bucket(Bucket=self.name)

    def config(self, **kw: Any) -> S3Config:
        return S3Config(
            bucket=self.name,
            endpoint_url=self.endpoint,
            prefix="yurt/files",
            access_key_id="moto-key",
            secret_access_key=SECRET,
            **kw,
        )

    def keys(self, under: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=f"yurt/files/{under}"
        )
        return [o["Key"] for page in pages for o in page.get("Contents", ())]


@pytest.fixture
def moto() -> Iterator[ThreadedMotoServer]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(moto: ThreadedMotoServer) -> Bucket:
    host, port = moto.get_host_and_port()
    return Bucket(f"http://{host}:{port}")


# moto's server in a process of its own: it keeps objects in memory, which must not count
# as the router's. It prints its port, and stops when its stdin closes.
MOTO = (
    "import sys; from moto.server import ThreadedMotoServer; "
    "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start(); "
    "print(s.get_host_and_port()[1], flush=True); sys.stdin.read(); s.stop()"
)


@asynccontextmanager
async def moto_process() -> AsyncIterator[str]:
    """moto's S3 server in a child process; yields its endpoint URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MOTO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), DEADLINE))
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        await proc.wait()


@asynccontextmanager
async def serving(cls: type[App], data_dir: Path, files: FilesConfig) -> AsyncIterator[Served]:
    """``cls`` served with the file store configured by ``files``."""
    platform = Platform(fast_config(data_dir).model_copy(update={"files": files}))
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


def on_disk(data_dir: Path) -> list[Path]:
    """Files the store left in the data dir (its spool must be empty between writes)."""
    return [p for p in (data_dir / "files").rglob("*") if p.is_file()]


async def test_image_from_pil_is_kept_in_the_bucket_and_served(
    tmp_path: Path, bucket: Bucket
) -> None:
    """An app's ``Image.from_pil`` output, sync and queued, lands in the bucket and its URL
    serves the same PNG as ``image/png``; nothing stays on the server's disk."""
    data = tmp_path / "data"
    async with serving(Painter, data, FilesConfig(s3=bucket.config())) as app:
        status, body, _ = await app.post(json={"color": "teal", "image_size": "square"})
        assert status == 200, body
        expected = painting("teal", 512, 512)
        image = body["image"]
        assert image["url"].startswith(f"{app.platform.url}/files/")
        assert (image["content_type"], image["file_size"]) == ("image/png", len(expected))
        code, got, headers = await fetch(app, image["url"])
        assert (code, headers["content-type"], got) == (200, "image/png", expected)
        assert headers["etag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
        assert "sandbox" in headers["content-security-policy"]
        sha = hashlib.sha256(expected).hexdigest()
        assert bucket.keys("blobs/") == [f"yurt/files/blobs/{sha}"]
        token = image["url"].split("/")[-2]
        assert f"yurt/files/refs/{token}.json" in bucket.keys("refs/")

        sub = await app.submit(json={"color": "navy", "image_size": {"width": 7, "height": 5}})
        await app.completed(sub)
        code, result, _ = await app.result(sub)
        assert code == 200
        code, got, headers = await fetch(app, result["image"]["url"])
        assert (code, headers["content-type"], got) == (200, "image/png", painting("navy", 7, 5))
        assert on_disk(data) == []


async def test_range_requests_are_ranged_reads_of_the_bucket(
    tmp_path: Path, bucket: Bucket
) -> None:
    """A stored video answers Range requests with 206 and exactly those bytes, 416 past its
    end, all of it when If-Range names another version; HEAD gives its length."""
    clip = clip_bytes(100_000)
    async with serving(Filmmaker, tmp_path / "data", FilesConfig(s3=bucket.config())) as app:
        status, body, _ = await app.post(json={"size": 100_000})
        assert status == 200, body
        url = body["video"]["url"]
        code, got, headers = await fetch(app, url, headers={"Range": "bytes=1000-1999"})
        assert (code, got) == (206, clip[1000:2000])
        assert headers["content-range"] == "bytes 1000-1999/100000"
        assert headers["content-type"] == "video/mp4"
        code, got, _ = await fetch(app, url, headers={"Range": "bytes=-10"})
        assert (code, got) == (206, clip[-10:])
        code, got, _ = await fetch(app, url, headers={"Range": "bytes=99990-"})
        assert (code, got) == (206, clip[99990:])
        code, _, headers = await fetch(app, url, headers={"Range": "bytes=100000-"})
        assert (code, headers["content-range"]) == (416, "bytes */100000")
        stale = {"Range": "bytes=0-9", "If-Range": '"not-this-one"'}
        code, got, _ = await fetch(app, url, headers=stale)
        assert (code, got) == (200, clip)
        async with app.session.head(url) as resp:
            assert (resp.status, resp.headers["content-length"]) == (200, "100000")
            assert resp.headers["accept-ranges"] == "bytes"
            fresh = {"Range": "bytes=0-9", "If-Range": resp.headers["etag"]}
        code, got, _ = await fetch(app, url, headers=fresh)
        assert (code, got) == (206, clip[:10])
        code, got, _ = await fetch(app, url, headers={"If-None-Match": fresh["If-Range"]})
        assert (code, got) == (304, b"")


async def test_client_upload_goes_to_the_bucket_and_an_app_reads_it(
    tmp_path: Path, bucket: Bucket
) -> None:
    """yurt's Client uploads a file larger than one multipart part; it is kept in the bucket
    under its digest, served back whole, and an app given its URL reads the same bytes."""
    source = tmp_path / "input.bin"
    with source.open("wb") as f:
        for i in range(20):  # 20 MiB: boto3 sends it in 8 MiB parts
            f.write(bytes([i]) * (1 << 20))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    async with serving(Reader, tmp_path / "data", FilesConfig(s3=bucket.config())) as app:

        def upload() -> tuple[str, Any]:
            with Client(app.platform.url) as client:
                url = client.upload_file(source)
                return url, client.run(app.app_id, {"file": url})

        url, reply = await asyncio.to_thread(upload)
        assert url.startswith(f"{app.platform.url}/files/") and url.endswith("/input.bin")
        assert reply == {"size": 20 << 20, "sha256": digest}
        assert f"yurt/files/blobs/{digest}" in bucket.keys("blobs/")
        code, got, _ = await fetch(app, url)
        assert code == 200 and hashlib.sha256(got).hexdigest() == digest
        assert on_disk(tmp_path / "data") == []


async def test_expired_files_answer_404_and_leave_the_bucket(
    tmp_path: Path, bucket: Bucket
) -> None:
    """Past its ttl a file answers 404, and the sweeper deletes its record and blob from the
    bucket."""
    files = FilesConfig(ttl=5.0, sweep_interval=0.1, s3=bucket.config())
    async with serving(Filmmaker, tmp_path / "data", files) as app:
        status, body, _ = await app.post(json={"size": 1000})
        assert status == 200, body
        url = body["video"]["url"]
        assert (await fetch(app, url))[:2] == (200, clip_bytes(1000))
        assert bucket.keys("blobs/") and bucket.keys("refs/")

        async def gone() -> bool:
            return (await fetch(app, url))[0] == 404

        await wait_until(gone, what="the file to expire")
        await wait_until(lambda: not bucket.keys(), what="the bucket to empty")


async def test_with_keys_on_local_runners_upload_without_bucket_credentials(
    tmp_path: Path, bucket: Bucket
) -> None:
    """With a key made, a local runner's outputs still reach the bucket (it posts them with
    the router's upload token, not bucket credentials), while an upload without a key is
    401."""
    async with serving(Painter, tmp_path / "data", FilesConfig(s3=bucket.config())) as app:
        _, key = app.platform.keys.create("API", None, time.time())
        env = app.platform.files_env()
        assert "YURT_FILES_DIR" not in env and env["YURT_FILES_TOKEN"]
        assert not any(SECRET in v or "moto-key" in v for v in env.values())
        headers = {"Authorization": f"Key {key}"}
        status, body, _ = await app.post(json={"color": "red"}, headers=headers)
        assert status == 200, body
        assert (await fetch(app, body["image"]["url"]))[:2] == (200, painting("red", 512, 512))
        async with app.session.post(app.platform.url + "/files/upload", data=b"no") as resp:
            assert resp.status == 401
        bad = {"Authorization": "Bearer " + "x" * 43}
        async with app.session.post(
            app.platform.url + "/files/upload", data=b"no", headers=bad
        ) as resp:
            assert resp.status == 401


async def test_a_bucket_that_stops_answering_is_503_not_a_crash(
    tmp_path: Path, moto: ThreadedMotoServer, bucket: Bucket
) -> None:
    """Once the bucket is unreachable, a file URL and an upload answer a JSON 503."""
    async with serving(Filmmaker, tmp_path / "data", FilesConfig(s3=bucket.config())) as app:
        status, body, _ = await app.post(json={"size": 10})
        assert status == 200, body
        moto.stop()
        code, got, _ = await fetch(app, body["video"]["url"])
        assert code == 503 and b"file_store_unavailable" in got
        async with app.session.post(app.platform.url + "/files/upload", data=b"x") as resp:
            assert resp.status == 503
            assert (await resp.json())["error_type"] == "file_store_unavailable"
        assert on_disk(tmp_path / "data") == []


async def test_a_missing_bucket_stops_the_server_at_start(tmp_path: Path, bucket: Bucket) -> None:
    """A bucket the store refuses (here: missing) is a ConfigError when the server starts."""
    config = bucket.config().model_copy(update={"bucket": "no-such-bucket-here"})
    platform = Platform(
        fast_config(tmp_path / "data").model_copy(update={"files": FilesConfig(s3=config)})
    )
    with pytest.raises(ConfigError, match=r"\[files\] s3: HeadBucket on bucket no-such"):
        await platform.start()


MIB = 1 << 20
SIZE = 200 * MIB


async def test_200_mib_through_yurt_run_to_the_bucket_keeps_router_memory_flat(
    tmp_path: Path,
) -> None:
    """``yurt run`` with ``[files] s3`` in its config file and the keys in AWS_* variables:
    200 MiB uploaded go to the bucket and an app reads them back through the router, while
    the router grows by less than 50 MiB."""
    async with moto_process() as endpoint:
        bucket = Bucket(endpoint)
        config = tmp_path / "yurt.toml"
        config.write_text(
            f'[files]\ns3 = {{ bucket = "{bucket.name}", endpoint_url = "{endpoint}", '
            'prefix = "yurt/files" }\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
        env |= {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": SECRET}
        target = f"{Path(__file__).parent / 'toolkit_apps.py'}::Reader"
        args = ["run", target, "--port", "0", "--data-dir", str(tmp_path / "data")]
        args += ["--config", str(config)]
        log = tmp_path / "run.log"
        proc, app_url = await start_yurt(args, log, r"at (http://\S+)", env)
        base = app_url.split("/default/")[0]
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            block = bytes(range(256)) * (MIB // 256)
            for i in range(SIZE // MIB):
                chunk = i.to_bytes(8, "big") + block[8:]
                digest.update(chunk)
                yield chunk

        try:
            timeout = aiohttp.ClientTimeout(total=DEADLINE * 3)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                async with s.post(f"{base}/files/upload", data=b"warm") as resp:
                    assert resp.status == 200, await resp.text()
                baseline = rss(proc.pid)
                with Peak(proc.pid) as peak:
                    headers = {"Content-Length": str(SIZE), "Content-Type": "video/mp4"}
                    async with s.post(f"{base}/files/upload", data=body(), headers=headers) as r:
                        assert r.status == 200, await r.text()
                        uploaded = await r.json()
                    async with s.post(app_url, json={"file": uploaded["url"]}) as r:
                        assert r.status == 200, await r.text()
                        assert await r.json() == {"size": SIZE, "sha256": digest.hexdigest()}
                assert peak.peak - baseline < 50 * MIB, (baseline, peak.peak)
                print(f"router RSS {baseline / MIB:.0f} -> {peak.peak / MIB:.0f} MiB")
            assert f"yurt/files/blobs/{digest.hexdigest()}" in bucket.keys("blobs/")
            assert SECRET not in log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), DEADLINE)
