"""The router's two faces, for tests that run through each: a relay that has the router hand
every connection over to its aiohttp face before the caller's first byte."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

# "fast": the fast lane; "handed": the aiohttp face, on a connection the fast lane handed over.
FACES = ["fast", "handed"]
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, eof: bool) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if eof and writer.can_write_eof():
            writer.write_eof()  # the caller finished sending: pass its half-close on
            return
    except (ConnectionError, OSError):
        pass
    writer.close()


@asynccontextmanager
async def handed_over(url: str) -> AsyncIterator[str]:
    """A relay in front of the router at ``url``; yields its own URL.

    Each connection through it starts with ``GET /_yurt/health``, which the fast lane hands to
    the aiohttp face, and stays there: what the caller sends is served by that face.
    """
    target = urlsplit(url)
    tasks: set[asyncio.Task[None]] = set()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        router_r, router_w = await asyncio.open_connection(target.hostname, target.port)
        try:
            router_w.write(b"GET /_yurt/health HTTP/1.1\r\nhost: relay\r\n\r\n")
            head = await router_r.readuntil(b"\r\n\r\n")
            found = _LENGTH.search(head)
            assert head.startswith(b"HTTP/1.1 200") and found is not None, head
            await router_r.readexactly(int(found.group(1)))
            await asyncio.gather(
                _pipe(client_r, router_w, eof=True), _pipe(router_r, client_w, eof=False)
            )
        finally:
            router_w.close()
            client_w.close()
            tasks.discard(task)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()


@asynccontextmanager
async def front(url: str, face: str) -> AsyncIterator[str]:
    """The URL to call the router at ``url`` through ``face``."""
    if face == "fast":
        yield url
        return
    async with handed_over(url) as relayed:
        yield relayed
