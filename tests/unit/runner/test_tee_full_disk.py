"""The runner's stdout/stderr tee on a stream that refuses writes (a full disk)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from yurt.runner.logcapture import LogBuffer, Tee, capturing

FULL = Path("/dev/full")  # every write: ENOSPC, as on a full file system


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full")
def test_print_survives_a_full_disk_and_is_still_captured() -> None:
    """Writes the stream refuses are dropped and counted, not raised; capture goes on."""
    # As the runner's stdout is under PYTHONUNBUFFERED: no buffer, each write goes through.
    stream = io.TextIOWrapper(FULL.open("wb", buffering=0), write_through=True)
    try:
        with pytest.raises(OSError):
            stream.write("raw\n")
        tee = Tee(stream, "STDOUT")
        buffer = LogBuffer()
        with capturing(buffer):
            assert tee.write("one\ntwo\n") == 8
            tee.flush()
        assert tee.dropped_lines == 2
        assert [e["message"] for e in buffer.snapshot()] == ["one", "two"]
    finally:
        stream.detach().close()
