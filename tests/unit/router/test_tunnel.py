"""The frame watch finds the boundaries of a runner's websocket frames, however bytes split."""

from __future__ import annotations

import struct

import pytest

from yurt.router.tunnel import FrameWatch, close_frame


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked frame, with the 7-bit, 16-bit or 64-bit length as the payload needs."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 127)) + struct.pack("!Q", n)
    return head + payload


STREAM = frame(1, b"hi") + frame(2, b"x" * 300) + frame(2, b"y" * 70000) + frame(1, b"")


@pytest.mark.parametrize("step", [1, 2, 3, 7, 125, 4096, len(STREAM)])
def test_boundaries_whatever_the_split(step: int) -> None:
    """Between frames exactly at each frame's end, split into reads of any size."""
    ends = set()
    at = 0
    for f in (frame(1, b"hi"), frame(2, b"x" * 300), frame(2, b"y" * 70000), frame(1, b"")):
        at += len(f)
        ends.add(at)
    watch = FrameWatch()
    fed = 0
    while fed < len(STREAM):
        chunk = STREAM[fed : fed + step]
        watch.feed(chunk)
        fed += len(chunk)
        assert watch.between_frames == (fed in ends)
    assert not watch.closed


def test_a_close_frame_is_seen() -> None:
    """A close frame from the runner marks the session closed by it."""
    watch = FrameWatch()
    watch.feed(frame(1, b"bye") + close_frame(1000, b"done"))
    assert watch.closed and watch.between_frames


def test_close_frame_shape() -> None:
    """1011 and the reason, in an unmasked final close frame."""
    assert close_frame(1011, b"gone") == b"\x88\x06\x03\xf3gone"
