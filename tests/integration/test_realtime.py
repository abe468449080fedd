"""``@yurt.realtime`` end to end: a real runner process, driven by yurt's own client.

The platform starts the runner (min_concurrency=1); the tests connect to it directly, as the
router's websocket proxy will, with the blocking and the asyncio client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from yurt.client.realtime import AsyncRealtimeConnection, RealtimeConnection, RealtimeError

from realtime_apps import Live
from support import Served, served, wait_until

pytestmark = pytest.mark.timeout(180)
OPEN_TIMEOUT = 30.0


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Served, str]]:
    """The Live app on a platform, and the ws:// base URL of its one runner."""
    async with served(Live, tmp_path / "data") as app:
        runners = await wait_until(app.healthy, what="a healthy Live runner")
        yield app, f"ws://{runners[0].host}:{runners[0].port}"


def drive_sync(url: str) -> list[dict[str, object]]:
    """Send two frames with bytes over the blocking client; read both outputs."""
    with RealtimeConnection.open(url, {}, timeout=OPEN_TIMEOUT, ssl_context=None) as rt:
        rt.send({"prompt": "one", "image": b"\x01\x02\x03"})
        rt.send({"prompt": "two"})
        return [rt.recv(OPEN_TIMEOUT), rt.recv(OPEN_TIMEOUT)]  # type: ignore[list-item]


async def test_blocking_client_drives_a_unary_endpoint_on_a_runner(
    live: tuple[Served, str],
) -> None:
    """Each input gets its output, in order, bytes intact, on one connection."""
    _, base = live
    outputs = await asyncio.to_thread(drive_sync, base + "/realtime")
    assert [o["text"] for o in outputs] == ["drawn: one", "drawn: two"]
    assert outputs[0]["image"] == b"\x03\x02\x01"
    seqs = [o["seq"] for o in outputs]
    assert seqs[1] == seqs[0] + 1  # one App instance serves the session


async def test_async_client_reads_a_server_stream_then_the_end(live: tuple[Served, str]) -> None:
    """A server-streaming endpoint's outputs arrive in order; the end is fal's TIMEOUT."""
    _, base = live
    async with await AsyncRealtimeConnection.open(
        base + "/count", {}, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        await rt.send({"upto": 3})
        got = [await rt.recv() for _ in range(3)]
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert info.value.error == "TIMEOUT"


async def test_an_endpoint_error_reaches_the_client_as_realtime_error(
    live: tuple[Served, str],
) -> None:
    """An exception in the endpoint ends the session with INTERNAL_ERROR naming it."""
    _, base = live
    async with await AsyncRealtimeConnection.open(
        base + "/broken", {}, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        await rt.send({"prompt": "a cat"})
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert info.value.error == "INTERNAL_ERROR"
    assert info.value.reason == "RuntimeError: cannot draw a cat"


async def test_an_invalid_input_is_named_and_the_runner_keeps_serving(
    live: tuple[Served, str],
) -> None:
    """A frame missing a field ends that session with VALIDATION_ERROR; the next one works."""
    _, base = live
    async with await AsyncRealtimeConnection.open(
        base + "/realtime", {}, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        await rt.send({"image": b""})
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert info.value.error == "VALIDATION_ERROR"
    assert "prompt" in info.value.reason
    outputs = await asyncio.to_thread(drive_sync, base + "/realtime")
    assert outputs[0]["text"] == "drawn: one"


async def test_max_buffering_outside_fal_clients_range_is_refused(
    live: tuple[Served, str],
) -> None:
    """max_buffering=0 in the URL: the session says BAD_REQUEST and closes."""
    _, base = live
    async with await AsyncRealtimeConnection.open(
        base + "/realtime?max_buffering=0", {}, timeout=OPEN_TIMEOUT, ssl_context=None
    ) as rt:
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert info.value.error == "BAD_REQUEST"
