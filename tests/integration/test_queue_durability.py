"""The queue outlives its router: ``yurt run`` SIGKILLed with work queued and running, then
started again on the same data dir, completes every request it had accepted (at least once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_cli_run import alive, yurt_run

from doubles.ports import unused_port

pytestmark = pytest.mark.timeout(240)

TARGET = f"{Path(__file__).with_name('durability_app.py')}::Counted"
SUBMITS = 300
SECONDS = 0.1  # per request; 8 slots (2 runners x 4) make ~4 s of work in all
DEADLINE = 90.0  # generous: a loaded 2-core machine


def bindable(port: int) -> bool:
    # As asyncio's create_server binds: with SO_REUSEADDR, so TIME_WAIT does not count.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start(port: int, data_dir: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    """``yurt run`` the durability app; returns it and the app's URL once it serves."""
    with log.open("a") as err:
        proc = subprocess.Popen(
            yurt_run(TARGET, port, data_dir), stdout=subprocess.PIPE, stderr=err, text=True
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"at (http://\S+)", line)
    if not match:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        tail = log.read_text()[-3000:]
        pytest.fail(f"yurt run did not start (printed {line!r}); its log ends:\n{tail}")
    return proc, match.group(1)


def stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def runner_children(pid: int) -> set[int]:
    """Runners whose parent is ``pid`` (read before it dies: orphans get a new parent)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid and b"yurt.runner" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
    return found


def counted(path: Path) -> list[tuple[int, str, int]]:
    """The count file's lines: (n, request id, runner pid)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(n), rid, int(pid)) for n, rid, pid in (line.split() for line in lines)]


async def wait_for(predicate: Any, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


async def submit_all(
    session: aiohttp.ClientSession, url: str, count_file: Path
) -> dict[int, dict[str, Any]]:
    """Submit ``SUBMITS`` requests at once; the replies of those accepted, by ``n``."""
    accepted: dict[int, dict[str, Any]] = {}

    async def one(n: int) -> None:
        body = {"n": n, "count_file": str(count_file), "seconds": SECONDS}
        # The router may die under a submission: that one is not accepted, nothing more.
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.post(url, json=body) as resp:
                if resp.status == 200:
                    accepted[n] = await resp.json()

    await asyncio.gather(*(one(n) for n in range(SUBMITS)))
    return accepted


async def until_completed(session: aiohttp.ClientSession, accepted: dict[int, Any]) -> None:
    pending = dict(accepted)
    deadline = time.monotonic() + DEADLINE

    async def completed(reply: dict[str, Any]) -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(reply["status_url"]) as resp:
                await resp.read()
                return resp.status == 200
        return False

    while pending:
        done = await asyncio.gather(*(completed(r) for r in pending.values()))
        pending = {n: r for (n, r), ok in zip(pending.items(), done, strict=True) if not ok}
        if pending and time.monotonic() > deadline:
            pytest.fail(f"{len(pending)} accepted requests not COMPLETED after {DEADLINE:g}s")
        await asyncio.sleep(0.1)


async def test_router_killed_midway_loses_no_accepted_request(tmp_path: Path) -> None:
    """Submits a few hundred requests, SIGKILLs the router mid-way, restarts it, and finds every
    accepted request completed, each counted by the app at least once."""
    # Named before yurt run binds it, and again after the kill: out of port-0 binds' way.
    port = unused_port()
    data_dir, log = tmp_path / "data", tmp_path / "yurt-run.log"
    count_file = tmp_path / "count.txt"
    first: subprocess.Popen[str] | None = None
    second: subprocess.Popen[str] | None = None
    old_runners: set[int] = set()
    t0 = time.monotonic()
    try:
        first, app_url = start(port, data_dir, log)
        base = app_url.rsplit("/", 2)[0]
        app_id = app_url[len(base) + 1 :]  # owner/app
        connector = aiohttp.TCPConnector(limit=64)
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            submitting = asyncio.ensure_future(
                submit_all(session, f"{base}/queue/{app_id}", count_file)
            )
            await wait_for(lambda: len(counted(count_file)) >= SUBMITS // 3, "a third counted")
            async with session.get(f"{base}/_yurt/apps") as resp:
                apps = await resp.json()
            listed = {r["pid"] for a in apps for r in a["runners"] if r["pid"]}
            old_runners = listed | runner_children(first.pid)
            first.send_signal(signal.SIGKILL)
            first.wait()
            at_kill = len(counted(count_file))
            t_kill = time.monotonic() - t0
            accepted = await submitting
        assert listed, "no runner listed by /_yurt/apps before the kill"
        assert len(accepted) >= SUBMITS // 3, f"only {len(accepted)} submissions accepted"

        await wait_for(lambda: bindable(port), f"port {port} free again")
        second, _ = start(port, data_dir, log)
        new_pid = second.pid
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
            await until_completed(s, accepted)
            t_done = time.monotonic() - t0

            async def result(reply: dict[str, Any]) -> tuple[int, Any]:
                async with s.get(reply["response_url"]) as resp:
                    return resp.status, await resp.json()

            results = await asyncio.gather(*(result(r) for r in accepted.values()))
        for (n, _reply), (status, body) in zip(accepted.items(), results, strict=True):
            assert (status, body) == (200, {"n": n}), f"request n={n}"

        lines = counted(count_file)
        times = Counter(n for n, _, _ in lines)
        missing = sorted(n for n in accepted if times[n] == 0)
        assert not missing, f"accepted but never run: n={missing}"
        for n, rid, _pid in lines:
            if n in accepted and rid != "-":
                assert rid == accepted[n]["request_id"], f"n={n} ran as {rid}"
        by_second = {n for n, _, pid in lines if pid not in old_runners}
        assert by_second, "no request was left for the restarted router: the kill came too late"

        await wait_for(
            lambda: not any(alive(p) for p in old_runners), "the first router's runners to exit"
        )
        twice = sum(1 for n in accepted if times[n] > 1)
        print(
            f"\naccepted {len(accepted)}/{SUBMITS}; counted {at_kill} before the SIGKILL at "
            f"{t_kill:.1f}s; all completed at {t_done:.1f}s; run by the restarted router "
            f"(pid {new_pid}): {len(by_second)}; counted more than once: {twice}; counted but "
            f"not accepted: {len(set(times) - set(accepted))}; first router's runners "
            f"{sorted(old_runners)} gone"
        )
    finally:
        if first is not None and first.poll() is None:
            first.kill()
        stop(first)
        stop(second)
        for pid in old_runners:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
