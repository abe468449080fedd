"""The pool hands a streamed response over at its head and its body chunk by chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from yurt.router.pool import ConnectionPool, UpstreamError

from support import wait_until


class Upstream:
    """An aiohttp server whose /stream writes one chunk, then the next once ``go_on`` is set."""

    def __init__(self) -> None:
        self.go_on = asyncio.Event()
        self.cut = asyncio.Event()  # its write failed: the reader went
        self.port = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/plain":
            return web.Response(body=b"whole")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        if request.path == "/endless":
            try:
                while True:
                    await asyncio.sleep(0.02)
                    await response.write(b"data: more\n\n")
            except ConnectionError:
                self.cut.set()
                raise
        await self.go_on.wait()
        await response.write(b"data: 2\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    runner = web.ServerRunner(web.Server(up.handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.port = runner.addresses[0][1]
    yield up
    up.go_on.set()  # a handler still waiting would hold the server's shutdown
    await runner.cleanup()


async def test_head_first_then_each_chunk_and_the_connection_is_kept(upstream: Upstream) -> None:
    """The response comes back before its second chunk exists; afterwards the connection is
    reused for a plain request, which is buffered whole."""
    pool = ConnectionPool("127.0.0.1", upstream.port)
    try:
        response = await pool.request(b"POST", b"/stream", [], b"", timeout=30, stream=True)
        assert response.status == 200 and response.stream is not None and response.body == b""
        assert (b"content-type", b"text/event-stream") in response.headers
        assert await response.stream.next() == b"data: 1\n\n"
        upstream.go_on.set()
        rest = b""
        while (chunk := await response.stream.next()) is not None:
            rest += chunk
        assert rest == b"data: 2\n\n"
        await wait_until(lambda: pool.idle_count == 1, what="the connection back in the pool")
        plain = await pool.request(b"GET", b"/plain", [], b"", timeout=30, stream=True)
        assert plain.stream is None and plain.body == b"whole"
    finally:
        await pool.close()


async def test_a_reader_that_abandons_closes_the_connection(upstream: Upstream) -> None:
    """Abandoning a stream part-way closes its connection: the upstream's next write fails."""
    pool = ConnectionPool("127.0.0.1", upstream.port)
    try:
        response = await pool.request(b"POST", b"/endless", [], b"", timeout=30, stream=True)
        assert response.stream is not None
        assert await response.stream.next() == b"data: 1\n\n"
        response.stream.abandon()
        await asyncio.wait_for(upstream.cut.wait(), 30)
        assert pool.idle_count == 0
    finally:
        await pool.close()


async def test_the_deadline_covers_the_whole_body(upstream: Upstream) -> None:
    """A stream still going at its deadline fails with a timeout ``UpstreamError``."""
    pool = ConnectionPool("127.0.0.1", upstream.port)
    try:
        response = await pool.request(b"POST", b"/endless", [], b"", timeout=0.3, stream=True)
        assert response.stream is not None
        with pytest.raises(UpstreamError) as caught:
            while await response.stream.next() is not None:
                pass
        assert caught.value.kind == "timeout"
    finally:
        await pool.close()
