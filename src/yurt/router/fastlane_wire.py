"""What the fast lane writes besides plain replies: streams, chunk by chunk, and a tunnel's 101."""

from __future__ import annotations

import asyncio

from yurt.router.admitted import Stream
from yurt.router.http import status_line


def stream_head(stream: Stream, keep_alive: bool, http10: bool) -> tuple[bytes, bool]:
    """A stream's status line and headers, and whether the connection stays open after it
    (chunked; HTTP/1.0: sent until the connection closes)."""
    rid = stream.request_id.encode()
    head = [status_line(stream.status)]
    head += [b"%s: %s\r\n" % header for header in stream.headers]
    head.append(b"x-yurt-request-id: %s\r\nx-fal-request-id: %s\r\n" % (rid, rid))
    if http10 or not keep_alive:
        head.append(b"connection: close\r\n")
        keep_alive = False
    if not http10:
        head.append(b"transfer-encoding: chunked\r\n")
    head.append(b"\r\n")
    return b"".join(head), keep_alive


def frame(chunk: bytes, last: bool, http10: bool) -> bytes:
    """One chunk of a stream as it goes on the wire (the terminator with the last)."""
    if http10:
        return chunk
    data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b""
    return data + b"0\r\n\r\n" if last else data


def upgrade_head(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The 101 that opens a tunnel, with the runner's headers."""
    head = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    head += [b"%s: %s\r\n" % header for header in headers]
    head.append(b"\r\n")
    return b"".join(head)


async def send_stream(
    transport: asyncio.Transport, stream: Stream, keep_alive: bool, http10: bool
) -> tuple[bool, bool]:
    """Send ``stream``: whether it ended (False: cut short, and the connection closed, so the
    client cannot take it as complete) and whether the connection stays open after it."""
    pending, keep_alive = stream_head(stream, keep_alive, http10)
    if stream.ready is not None and not stream.ready():
        # The first chunk is not in: the caller gets the head now, not when the chunk is made.
        transport.write(pending)
        pending = b""
    ended = False
    try:
        async for chunk, last in stream.chunks:
            if transport.is_closing():
                break
            # The head goes with the first chunk where it was in, the terminator with the last.
            transport.write(pending + frame(chunk, last, http10))
            pending = b""
            if last:
                ended = True
                break
    finally:
        if not ended:
            transport.close()
        await stream.chunks.aclose()
    return ended, keep_alive
