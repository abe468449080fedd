"""A real runner's streams and websockets through the router, through both faces."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from fastapi_apps import FastApiStyle

from faces import FACES
from support import served, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("face", FACES)]


async def test_first_event_reaches_the_caller_before_the_second_is_made(
    tmp_path: Path, face: str
) -> None:
    """A StreamingResponse's first event arrives while the runner waits to make the second."""
    gate = tmp_path / "gate"
    async with (
        served(FastApiStyle, tmp_path, face=face) as app,
        app.session.post(app.url + "/gate", params={"path": str(gate)}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 30)
        assert first == b"data: first\n\n"
        assert not gate.exists()  # the runner is still before its second event
        gate.write_text("open")
        assert await asyncio.wait_for(resp.content.read(), 30) == b"data: second\n\n"


async def test_websocket_echo_close_code_refusal_and_slots(tmp_path: Path, face: str) -> None:
    """Echo and the app's own close code come through; a refusal keeps the runner's 403; an open
    session holds one of the runner's slots (max_multiplexing=2)."""
    async with served(FastApiStyle, tmp_path, face=face) as app:
        route = app.platform.router.routes[app.app_id]
        async with app.session.ws_connect(app.url + "/echo") as ws:
            await ws.send_str("hello")
            assert await asyncio.wait_for(ws.receive_str(), 30) == "echo: hello"
            assert sum(slot.in_flight for slot in route.slots.values()) == 1
            await ws.send_str("bye")
            message = await asyncio.wait_for(ws.receive(), 30)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert (ws.close_code, message.extra) == (4000, "bye")
        await wait_until(
            lambda: sum(slot.in_flight for slot in route.slots.values()) == 0, what="slot back"
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await app.session.ws_connect(app.url + "/refuse")
        assert refused.value.status == 403
