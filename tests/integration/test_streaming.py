"""A runner's streamed reply goes through the router chunk by chunk, through both faces."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from faces import FACES
from support import wait_until
from upstream import routed

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("face", FACES)]
SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}


class Events:
    """An SSE endpoint that sends its second event only once the test says so."""

    def __init__(self) -> None:
        self.go_on = asyncio.Event()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        await response.write(b'data: {"n": 1}\n\n')
        await self.go_on.wait()
        await response.write(b'data: {"n": 2}\n\n')
        await response.write_eof()
        return response


async def test_first_event_arrives_before_the_second_is_made(face: str) -> None:
    """The caller reads event 1 while the runner still holds event 2."""
    events = Events()
    async with routed(events, face) as rig, aiohttp.ClientSession() as session:
        async with session.post(rig.url + "/stream", json={}) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"] == "text/event-stream"
            assert len(resp.headers["x-fal-request-id"]) == 32
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 30)
            assert first == b'data: {"n": 1}\n\n'
            assert not events.go_on.is_set()  # read before the runner made event 2
            events.go_on.set()
            assert await asyncio.wait_for(resp.content.read(), 30) == b'data: {"n": 2}\n\n'
        route = rig.router.routes["o/stand-in"]
        assert route.slots["r1"].in_flight == 0  # the slot came back at the stream's end
        assert rig.backend.stops == []


async def test_a_caller_hanging_up_closes_the_runners_stream(face: str) -> None:
    """Once the caller goes, the runner's next write fails: its generator stops."""
    gone = asyncio.Event()

    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        try:
            while True:
                await response.write(b"data: tick\n\n")
                await asyncio.sleep(0.05)
        except ConnectionError:
            gone.set()
            raise

    async with routed(endless, face) as rig, aiohttp.ClientSession() as session:
        async with session.post(rig.url + "/stream", json={}) as resp:
            assert await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 30) == b"data: tick\n\n"
        # Leaving the block without reading on closes the caller's connection.
        await asyncio.wait_for(gone.wait(), 30)
        route = rig.router.routes["o/stand-in"]
        await wait_until(lambda: route.slots["r1"].in_flight == 0, what="the slot back")
        assert rig.backend.stops == []  # a caller going is no fault of the runner


async def test_request_timeout_covers_the_whole_stream(face: str) -> None:
    """A stream outliving the app's request_timeout (3 s) is cut, and the runner stopped."""

    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        while True:
            await response.write(b"data: tick\n\n")
            await asyncio.sleep(0.2)

    async with routed(slow, face) as rig, aiohttp.ClientSession() as session:
        async with session.post(rig.url + "/stream", json={}) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(resp.content.read(), 60)
        await wait_until(lambda: rig.backend.stops, what="the runner stopped")
        assert rig.backend.stops == [("r1", "request_timeout")]


async def test_a_chunked_reply_that_is_not_an_event_stream_streams_too(face: str) -> None:
    """Chunked transfer-encoding alone is enough to be relayed as it comes."""
    release = asyncio.Event()

    async def chunked(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"part one;")
        await release.wait()
        await response.write(b"part two")
        await response.write_eof()
        return response

    async with (
        routed(chunked, face) as rig,
        aiohttp.ClientSession() as session,
        session.post(rig.url + "/stream", json={}) as resp,
    ):
        assert await asyncio.wait_for(resp.content.readexactly(9), 30) == b"part one;"
        release.set()
        assert await asyncio.wait_for(resp.content.read(), 30) == b"part two"
