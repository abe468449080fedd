"""``yurt run`` shows each runner's output on its console, prefixed with the runner id."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from support import runner_logs, start_yurt, wait_until

pytestmark = pytest.mark.timeout(180)

APPS = Path(__file__).with_name("fault_apps.py")
READY = r"serving \S+ at (http://\S+)"


async def serve_talker(tmp_path: Path, *flags: str) -> tuple[asyncio.subprocess.Process, Path]:
    console = tmp_path / "console.txt"
    args = ["run", f"{APPS}::Talker", "--port", "0", "--data-dir", str(tmp_path / "data")]
    proc, _ = await start_yurt([*args, *flags], console, READY)
    return proc, console


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)


def log_text(tmp_path: Path) -> str:
    return "".join(p.read_text() for p in runner_logs(tmp_path / "data" / "logs"))


async def test_runner_output_is_shown_prefixed_and_kept_in_the_log(tmp_path: Path) -> None:
    """setup()'s print appears on the console as ``[r-...] line``, and in DATA_DIR/logs/."""
    proc, console = await serve_talker(tmp_path)
    try:
        found = await wait_until(
            lambda: re.search(r"^\[(r-[0-9a-f]+)\] hello from setup$", console.read_text(), re.M),
            what="the runner's print on the console",
        )
        runner_id = found.group(1)
        (log,) = (tmp_path / "data" / "logs").glob(f"*-{runner_id}.log")
        assert "hello from setup\n" in log.read_text()
        assert "[r-" not in log.read_text()  # the file has the runner's own lines
    finally:
        await stop(proc)


async def test_quiet_keeps_runner_output_off_the_console(tmp_path: Path) -> None:
    """With --quiet the runner's output is only in DATA_DIR/logs/."""
    proc, console = await serve_talker(tmp_path, "--quiet")
    try:
        await wait_until(
            lambda: "hello from setup" in log_text(tmp_path), what="the print in the log"
        )
    finally:
        await stop(proc)
    assert "hello from setup" not in console.read_text()
