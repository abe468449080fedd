"""``@yurt.realtime`` end to end: a real runner process, driven by yurt's own client.

The platform starts the runner (min_concurrency=1); the tests connect to it directly with the
runner's token, as the router's websocket proxy does, with the blocking and the asyncio client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest

from yurt.client import AsyncClient
from yurt.client.realtime import AsyncRealtimeConnection, RealtimeConnection, RealtimeError

from realtime_apps import Live
from support import Served, served, wait_until

pytestmark = pytest.mark.timeout(180)
OPEN_TIMEOUT = 30.0


TOKEN_HEADER = "x-yurt-runner-token"


class Runner(NamedTuple):
    """The Live app's platform, its runner's ws:// base URL, and the runner's token header."""

    app: Served
    base: str
    headers: dict[str, str]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Runner]:
    """The Live app on a platform, and how to reach its one runner directly."""
    async with served(Live, tmp_path / "data") as app:
        (runner,) = await wait_until(app.healthy, what="a healthy Live runner")
        yield Runner(app, f"ws://{runner.host}:{runner.port}", {TOKEN_HEADER: runner.token})


def drive_sync(url: str, headers: dict[str, str]) -> list[dict[str, object]]:
    """Send two frames with bytes over the blocking client; read both outputs."""
    with RealtimeConnection.open(url, headers, timeout=OPEN_TIMEOUT, ssl_context=None) as rt:
        rt.send({"prompt": "one", "image": b"\x01\x02\x03"})
        rt.send({"prompt": "two"})
        return [rt.recv(OPEN_TIMEOUT), rt.recv(OPEN_TIMEOUT)]  # type: ignore[list-item]


async def test_blocking_client_drives_a_unary_endpoint_on_a_runner(
    live: Runner,
) -> None:
    """Each input gets its output, in order, bytes intact, on one connection."""
    base, headers = live.base, live.headers
    outputs = await asyncio.to_thread(drive_sync, base + "/realtime", headers)
    assert [o["text"] for o in outputs] == ["drawn: one", "drawn: two"]
    assert outputs[0]["image"] == b"\x03\x02\x01"
    seqs = [o["seq"] for o in outputs]
    assert seqs[1] == seqs[0] + 1  # one App instance serves the session


async def test_async_client_reads_a_server_stream_then_the_end(live: Runner) -> None:
    """A server-streaming endpoint's outputs arrive in order; the end is fal's TIMEOUT."""
    base, headers = live.base, live.headers
    async with await AsyncRealtimeConnection.open(
        base + "/count", headers, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        await rt.send({"upto": 3})
        got = [await rt.recv() for _ in range(3)]
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert info.value.error == "TIMEOUT"


async def test_an_endpoint_error_reaches_the_client_as_realtime_error(
    live: Runner,
) -> None:
    """An exception in the endpoint ends the session with INTERNAL_ERROR naming it."""
    base, headers = live.base, live.headers
    async with await AsyncRealtimeConnection.open(
        base + "/broken", headers, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        await rt.send({"prompt": "a cat"})
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert info.value.error == "INTERNAL_ERROR"
    assert info.value.reason == "RuntimeError: cannot draw a cat"


async def test_an_invalid_input_is_named_and_the_runner_keeps_serving(
    live: Runner,
) -> None:
    """A frame missing a field ends that session with VALIDATION_ERROR; the next one works."""
    base, headers = live.base, live.headers
    async with await AsyncRealtimeConnection.open(
        base + "/realtime", headers, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        await rt.send({"image": b""})
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert info.value.error == "VALIDATION_ERROR"
    assert "prompt" in info.value.reason
    outputs = await asyncio.to_thread(drive_sync, base + "/realtime", headers)
    assert outputs[0]["text"] == "drawn: one"


async def test_max_buffering_outside_fal_clients_range_is_refused(
    live: Runner,
) -> None:
    """max_buffering=0 in the URL: the session says BAD_REQUEST and closes."""
    base, headers = live.base, live.headers
    async with await AsyncRealtimeConnection.open(
        base + "/realtime?max_buffering=0", headers, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert info.value.error == "BAD_REQUEST"


async def test_through_the_router_on_the_apps_public_path(live: Runner) -> None:
    """Client(router).connect("owner/app") reaches the runner through the router's proxy, and
    ws_connect a plain websocket endpoint beside it."""
    app = live.app
    async with AsyncClient(app.platform.url, timeout=OPEN_TIMEOUT) as client:
        async with client.connect(app.app_id) as rt:
            for prompt in ("one", "two"):
                await rt.send({"prompt": prompt, "image": b"ab"})
                output = await rt.recv()
                assert output is not None
                assert (output["text"], output["image"]) == (f"drawn: {prompt}", b"ba")
        async with client.connect(app.app_id, path="/count") as rt:
            await rt.send({"upto": 2})
            assert [await rt.recv(), await rt.recv()] == [{"n": 0}, {"n": 1}]
        async with client.ws_connect(app.app_id, path="/ws") as ws:  # a plain websocket
            await ws.send("hi")
            assert await ws.recv() == "echo: hi"


async def test_the_router_passes_max_buffering_on_to_the_runner(live: Runner) -> None:
    """The query of the upgrade reaches the runner: max_buffering=0 is refused there."""
    app = live.app
    url = "ws" + app.platform.url.removeprefix("http") + f"/{app.app_id}/realtime?max_buffering=0"
    async with await AsyncRealtimeConnection.open(
        url, {}, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert (info.value.error, info.value.reason) == (
        "BAD_REQUEST",
        "max_buffering='0' must be an integer from 1 to 60",
    )
