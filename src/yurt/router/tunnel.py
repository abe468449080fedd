"""A websocket session spliced between a caller and a runner, as bytes.

After the runner's ``101`` the router copies bytes both ways and parses nothing but the frame
heads the runner sends (RFC 6455 section 5.2), for one reason: should the runner go without
closing the session (it died), the caller must get a close frame with 1011 (RFC 6455 section
7.4.1, "internal error"), and one can only be written between two of the runner's frames.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

Header = tuple[bytes, bytes]
CLOSE_OPCODE = 0x8
INTERNAL_ERROR = 1011


def close_frame(code: int, reason: bytes) -> bytes:
    """A server's close frame (unmasked, RFC 6455 section 5.5.1); ``reason`` under 124 bytes."""
    payload = struct.pack("!H", code) + reason[:123]
    return bytes((0x80 | CLOSE_OPCODE, len(payload))) + payload


class FrameWatch:
    """Follows the frame boundaries of one direction of a websocket byte stream."""

    __slots__ = ("_head", "_remaining", "closed")

    def __init__(self) -> None:
        self._head = b""  # a frame head read in part
        self._remaining = 0  # payload bytes of the current frame still to come
        self.closed = False  # a close frame went by

    @property
    def between_frames(self) -> bool:
        """Whether the bytes so far end exactly at the end of a frame."""
        return not self._head and self._remaining == 0

    def feed(self, data: bytes) -> None:
        """Account for ``data``, the next bytes of the stream."""
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                step = min(self._remaining, end - pos)
                self._remaining -= step
                pos += step
                continue
            size = _head_size(self._head)
            take = (2 if size is None else size) - len(self._head)
            self._head += data[pos : pos + take]
            pos += take
            size = _head_size(self._head)
            if size is None or len(self._head) < size:
                continue  # the head goes on in the next bytes
            head, self._head = self._head, b""
            if head[0] & 0x0F == CLOSE_OPCODE:
                self.closed = True
            self._remaining = _payload_length(head)


def _head_size(head: bytes) -> int | None:
    """How long the frame head beginning ``head`` is; None until its first two bytes."""
    if len(head) < 2:
        return None
    size = 2 + (4 if head[1] & 0x80 else 0)
    length = head[1] & 0x7F
    return size + (2 if length == 126 else 8 if length == 127 else 0)


def _payload_length(head: bytes) -> int:
    length = head[1] & 0x7F
    if length == 126:
        return int(struct.unpack("!H", head[2:4])[0])
    if length == 127:
        return int(struct.unpack("!Q", head[2:10])[0])
    return length


@dataclass(slots=True)
class Tunnel:
    """A runner's connection after its ``101``: the head to send the caller, then bytes."""

    status: int
    headers: list[Header]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    release: Callable[[], None]  # gives the runner's slot back; called once the session ends
    watch: FrameWatch = field(default_factory=FrameWatch)

    def send(self, data: bytes) -> None:
        """Bytes from the caller, to the runner."""
        if not self.writer.is_closing():
            self.writer.write(data)

    async def pump(self, write: Callable[[bytes], None]) -> None:
        """Copy the runner's bytes to the caller (``write``) until the runner's side ends;
        then, unless the runner closed the session, a 1011 close frame where one fits."""
        try:
            while data := await self.reader.read(65536):
                self.watch.feed(data)
                write(data)
        except (ConnectionError, OSError):
            pass
        if not self.watch.closed and self.watch.between_frames:
            write(close_frame(INTERNAL_ERROR, b"the runner went away"))

    def close(self) -> None:
        """End the session on the runner's side and give its slot back (idempotent)."""
        self.writer.close()
        release, self.release = self.release, _nothing
        release()


def _nothing() -> None:
    pass
