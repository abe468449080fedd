"""A full data-dir disk: runners keep serving, accepted work runs, new submissions get 503.

The disk is a real one: ``yurt run`` serves from a data dir on an 8 MiB tmpfs, mounted in a
mount namespace of its own (``unshare``, unprivileged where user namespaces are allowed), so the
machine's disks are never filled. A shell in that namespace fills the tmpfs and frees it when
the test says so; the test reads the runner's log through ``/proc/PID/root``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support import DEADLINE, ROOT, runner_logs, wait_until

pytestmark = pytest.mark.timeout(240)

# $1 data dir (the mount point), $2 control dir, $3.. the yurt command.
NAMESPACE = """
set -e
mount -t tmpfs -o size=8m,mode=0700 yurt-test "$1"  # a data dir is private
data=$1 ctl=$2
shift 2
(
  until [ -e "$ctl/fill" ]; do sleep 0.05; done
  dd if=/dev/zero of="$data/ballast" bs=64k 2>/dev/null || true
  touch "$ctl/filled"
  until [ -e "$ctl/free" ]; do sleep 0.05; done
  rm -f "$data/ballast"
  touch "$ctl/freed"
) &
exec "$@"
"""

APP = """
import os, sys, time
from pathlib import Path
from pydantic import BaseModel
import yurt

GATE = Path({gate!r})

class Empty(BaseModel):
    pass

class Pid(BaseModel):
    pid: int

class DiskFull(yurt.App, keep_alive=300):
    def setup(self) -> None:
        while not GATE.exists():
            time.sleep(0.05)
        print("setup done", flush=True)

    @yurt.endpoint("/")
    def pid(self, body: Empty) -> Pid:
        print("stdout from a request", flush=True)
        print("stderr from a request", file=sys.stderr, flush=True)
        return Pid(pid=os.getpid())
"""


def read(path: Path) -> str:
    return path.read_text()


def read_logs(logs: Path) -> str:
    """The runners' logs only: a fork template keeps its own log beside them."""
    return "".join(p.read_text() for p in runner_logs(logs))


def namespaces_work(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    script = 'mount -t tmpfs -o size=1m none "$1"'
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", probe]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


async def test_a_full_disk_costs_log_lines_not_runners_or_accepted_work(tmp_path: Path) -> None:
    """On a full data dir the runner serves, work accepted before runs, a submission gets
    503 queue_unavailable; once freed, the log notes the lost lines and submissions work."""
    if not namespaces_work(tmp_path):
        pytest.skip("no unprivileged mount namespace (unshare --user --mount) here")
    data, ctl = tmp_path / "data", tmp_path / "ctl"
    data.mkdir()
    ctl.mkdir()
    app_file = tmp_path / "diskapp.py"
    app_file.write_text(APP.format(gate=str(ctl / "gate")))
    console = tmp_path / "console.txt"
    yurt = [sys.executable, "-m", "yurt.cli", "run", f"{app_file}::DiskFull"]
    yurt += ["--port", "0", "--data-dir", str(data), "--log-format", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    with console.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", NAMESPACE, "sh"],
            *[str(data), str(ctl), *yurt],
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    try:
        await full_disk_scenario(proc, console, data, ctl)
    finally:
        (ctl / "fill").touch()
        (ctl / "free").touch()  # the shell that fills and frees ends either way
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), DEADLINE)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def full_disk_scenario(
    proc: asyncio.subprocess.Process, console: Path, data: Path, ctl: Path
) -> None:
    def url() -> str | None:
        if proc.returncode is not None:
            pytest.fail(f"yurt run exited {proc.returncode}:\n{console.read_text()}")
        found = re.search(r"serving \S+ at (http://\S+)", console.read_text())
        return found.group(1) if found else None

    app_url: str = await wait_until(url, what="yurt run to serve")
    base, app_id = app_url.split("/", 3)[2], app_url.split("/", 3)[3]
    queue = f"http://{base}/queue/{app_id}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:

        async def submit() -> tuple[int, dict[str, Any]]:
            async with s.post(queue, json={}) as resp:
                return resp.status, await resp.json()

        async def completed(sub: dict[str, Any]) -> dict[str, Any]:
            async def done() -> dict[str, Any] | None:
                async with s.get(sub["status_url"]) as resp:
                    body: dict[str, Any] = await resp.json()
                return body if body["status"] == "COMPLETED" else None

            found: dict[str, Any] = await wait_until(done, what="the request to complete")
            return found

        # Accepted while there is room; its runner is in setup() when the disk fills.
        status, accepted = await submit()
        assert status == 200
        await wait_until(lambda: "runner_started" in console.read_text(), what="a runner")
        (ctl / "fill").touch()
        await wait_until((ctl / "filled").exists, what="the disk to fill")
        (ctl / "gate").touch()

        final = await completed(accepted)
        assert final.get("error") is None, final
        async with s.get(accepted["response_url"]) as resp:
            assert resp.status == 200
            pid = (await resp.json())["pid"]
        async with s.post(app_url, json={}) as resp:  # the same runner serves on
            assert resp.status == 200
            assert (await resp.json())["pid"] == pid
        status, refused = await submit()
        assert (status, refused["error_type"]) == (503, "queue_unavailable")
        # The console shows what the full disk could not keep.
        assert re.search(r"^\[r-[0-9a-f]+\] stderr from a request$", read(console), re.M)

        (ctl / "free").touch()
        await wait_until((ctl / "freed").exists, what="the disk to be freed")
        status, later = await submit()
        assert status == 200
        assert (await completed(later)).get("error") is None
        # The log, read inside the namespace: a note of the lines lost, then what came after.
        text = read_logs(Path(f"/proc/{proc.pid}/root{data}/logs"))
        assert re.search(r"\[yurt\] \d+ lines \(\d+ bytes\) of this runner's output", text)
        assert text.endswith("stderr from a request\n")
