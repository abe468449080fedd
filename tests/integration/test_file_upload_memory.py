"""A large upload streams through the router to disk: its memory does not grow with the body."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from support import DEADLINE, start_yurt

pytestmark = pytest.mark.timeout(240)

APPS = Path(__file__).parent / "toolkit_apps.py"
MIB = 1024 * 1024
SIZE = 200 * MIB
CHUNK = MIB


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Peak:
    """Samples a process's RSS in a thread until stopped; keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> Peak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


async def test_200_mib_upload_keeps_router_memory_flat(tmp_path: Path) -> None:
    """200 MiB uploaded to ``yurt run`` and read back by an app; the router grows < 50 MiB."""
    args = ["run", f"{APPS}::Reader", "--port", "0", "--data-dir", str(tmp_path / "data")]
    proc, app_url = await start_yurt(args, tmp_path / "run.log", r"at (http://\S+)")
    base = app_url.split("/default/")[0]
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        block = bytes(range(256)) * (CHUNK // 256)
        for i in range(SIZE // CHUNK):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            yield chunk

    try:
        timeout = aiohttp.ClientTimeout(total=DEADLINE * 2)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            # A first upload warms the router's upload path before the baseline is taken.
            async with s.post(f"{base}/files/upload", data=b"warm") as resp:
                assert resp.status == 200, await resp.text()
            baseline = rss(proc.pid)
            with Peak(proc.pid) as peak:
                headers = {"Content-Length": str(SIZE), "Content-Type": "video/mp4"}
                async with s.post(f"{base}/files/upload", data=body(), headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    uploaded = await resp.json()
            assert uploaded["file_size"] == SIZE
            assert peak.peak - baseline < 50 * MIB, (baseline, peak.peak)
            async with s.post(app_url, json={"file": uploaded["url"]}) as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.json() == {"size": SIZE, "sha256": digest.hexdigest()}
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), DEADLINE)
