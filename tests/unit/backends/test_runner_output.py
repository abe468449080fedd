"""A local runner's output: its log file, the console copy, and the tail kept for failures.

A full disk is the kernel's own: ``/dev/full`` answers every write with ENOSPC, as a full
file system does, so the write path below is the one a full data dir takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
from pathlib import Path

import pytest

from yurt.backends.runnerlog import TAIL_BYTES, Console, RunnerOutput

FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full")


@needs_dev_full
def test_a_full_disk_drops_and_counts_lines_and_the_console_still_shows_them() -> None:
    """Lines the log file cannot take are counted; the console gets every line, prefixed."""
    console = io.BytesIO()
    out = RunnerOutput("r-1", FULL, console)
    out.feed(b"one\ntwo\nthr")
    out.feed(b"ee\n")
    out.close()
    assert (out.dropped_lines, out.dropped_bytes) == (3, 14)
    assert console.getvalue() == b"[r-1] one\n[r-1] two\n[r-1] three\n"


def test_writes_resume_with_a_note_of_what_was_lost(tmp_path: Path) -> None:
    """Once the file can be written again, a line says how much was lost, then output goes on."""
    path = tmp_path / "not-yet" / "r.log"
    out = RunnerOutput("r-1", path, None)
    out.feed(b"lost 1\nlost 2\n")  # its directory is missing: the open fails
    path.parent.mkdir()
    out.feed(b"kept\n")
    out.close()
    text = path.read_text()
    assert text.endswith("kept\n")
    assert "2 lines (14 bytes)" in text
    assert "lost" not in text
    assert out.dropped_lines == 2
    assert path.stat().st_mode & 0o077 == 0


@needs_dev_full
def test_the_failure_line_is_read_from_memory_when_the_file_is_full() -> None:
    """Why a runner failed is known though its log file could not be written."""
    out = RunnerOutput("r-1", FULL, None)
    out.feed(b"x" * (2 * TAIL_BYTES) + b"\n")
    out.feed(b"yurt-runner-failure: setup: setup() raised RuntimeError: no weights\n")
    assert out.failure(4) == ("setup", "setup() raised RuntimeError: no weights")
    assert len(out.tail) <= TAIL_BYTES
    assert out.failure(None)[0] == "setup"
    assert RunnerOutput("r-2", FULL, None).failure(-9) == (
        "exited",
        "runner exited with code -9 before it became ready",
    )


def test_long_lines_reach_the_console_in_prefixed_pieces(tmp_path: Path) -> None:
    """A line with no end in sight is shown in pieces, each prefixed; an unended one at close."""
    console = io.BytesIO()
    out = RunnerOutput("r-1", tmp_path / "r.log", console)
    out.feed(b"a" * 40000)
    out.feed(b"tail")
    out.close()
    lines = console.getvalue().split(b"\n")[:-1]
    assert all(line.startswith(b"[r-1] ") for line in lines)
    assert b"".join(line[6:] for line in lines) == b"a" * 40000 + b"tail"
    assert (tmp_path / "r.log").read_bytes() == b"a" * 40000 + b"tail"


def test_a_broken_console_leaves_the_file_alone(tmp_path: Path) -> None:
    """A console that cannot be written is given up; the log file still gets everything."""
    console = io.BytesIO()
    console.close()
    out = RunnerOutput("r-1", tmp_path / "r.log", console)
    out.feed(b"one\n")
    out.feed(b"two\n")
    out.close()
    assert out.console is None
    assert (tmp_path / "r.log").read_bytes() == b"one\ntwo\n"


async def test_pump_copies_a_stream_to_its_end(tmp_path: Path) -> None:
    """The pump reads until the end of the stream and closes the file."""
    reader = asyncio.StreamReader()
    reader.feed_data(b"hello\n")
    reader.feed_eof()
    out = RunnerOutput("r-1", tmp_path / "r.log", None)
    await asyncio.wait_for(out.pump(reader), 30)
    assert (tmp_path / "r.log").read_bytes() == b"hello\n"


def test_a_console_no_one_reads_costs_lines_not_a_wait(tmp_path: Path) -> None:
    """A console pipe that never drains drops and counts lines; feeding never blocks on it."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as stream:
        console = Console(stream, max_pending=4)
        out = RunnerOutput("r-1", tmp_path / "r.log", console)
        chunk = b"x" * 1000 + b"\n"
        for _ in range(2000):  # 2 MB: far past a pipe's buffer and the 4 pending writes
            out.feed(chunk)
        assert console.dropped_lines > 0
        assert (tmp_path / "r.log").stat().st_size == 2000 * len(chunk)  # the file has them all
        os.set_blocking(read_end, False)
        closer = threading.Thread(target=console.close)  # shows what is queued, then ends
        closer.start()
        while closer.is_alive():  # read, so the console thread can write what it holds
            with contextlib.suppress(BlockingIOError):
                os.read(read_end, 1 << 16)
            closer.join(0.01)
    os.close(read_end)
