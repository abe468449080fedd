"""A websocket upgrade on an app's public path is spliced to a runner, through both faces."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from faces import FACES
from support import wait_until
from upstream import APP, routed

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("face", FACES)]


async def echo(request: web.BaseRequest) -> web.StreamResponse:
    """Echoes each message; on "die", drops its connection without closing the session."""
    if request.path != "/ws":
        return web.Response(status=404)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT and msg.data == "die":
            assert request.transport is not None
            request.transport.abort()
            break
        if msg.type is WSMsgType.TEXT:
            await ws.send_str("echo: " + msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def test_echo_through_the_router_holds_a_slot(face: str) -> None:
    """Text and binary messages go both ways; the session holds one slot until it closes."""
    async with routed(echo, face) as rig, aiohttp.ClientSession() as session:
        slot = rig.router.routes[APP].slots["r1"]
        async with session.ws_connect(rig.url + "/ws") as ws:
            await ws.send_str("hi")
            assert await asyncio.wait_for(ws.receive_str(), 30) == "echo: hi"
            big = bytes(range(256)) * 400  # past the 16-bit frame length
            await ws.send_bytes(big)
            assert await asyncio.wait_for(ws.receive_bytes(), 30) == big
            assert slot.in_flight == 1
            web_face = rig.router._web
            assert web_face is not None and bool(web_face.connections) == (face == "handed")
        await wait_until(lambda: slot.in_flight == 0, what="the slot back")


async def test_a_runner_dying_mid_session_closes_with_1011(face: str) -> None:
    """The runner's connection dropping mid-session gives the caller close code 1011."""
    async with (
        routed(echo, face) as rig,
        aiohttp.ClientSession() as session,
        session.ws_connect(rig.url + "/ws") as ws,
    ):
        await ws.send_str("die")
        msg = await asyncio.wait_for(ws.receive(), 30)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1011


async def test_an_upgrade_the_runner_refuses_gets_its_answer(face: str) -> None:
    """A runner answering the upgrade with 404 gives the caller that 404, not a session."""
    async with routed(echo, face) as rig, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(rig.url + "/stream")
        assert caught.value.status == 404
        await wait_until(
            lambda: rig.router.routes[APP].slots["r1"].in_flight == 0, what="the slot back"
        )
