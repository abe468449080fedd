"""Sync runs sent while a slot is free and a runner connection is kept (the fast lane sends
these from its callbacks): each way such a run can end, through both faces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import structlog
from fastapi_apps import FastApiStyle

from apps import Kept
from faces import FACES
from support import DEADLINE, Responses, Served, served, wait_until

pytestmark = pytest.mark.timeout(180)
BOTH = pytest.mark.parametrize("face", FACES)
# What only the fast lane does: aiohttp's shutdown is its own, and it notices a hang-up only
# when it next writes.
FAST = pytest.mark.parametrize("face", ["fast"])


def post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def in_flight(app: Served) -> int:
    return sum(slot.in_flight for slot in app.platform.router.routes[app.app_id].slots.values())


def kept(app: Served) -> bool:
    """Whether the router keeps an idle connection to each of the app's runners (runs and the
    router's own calls to a runner share them, so there may be more than one)."""
    slots = app.platform.router.routes[app.app_id].slots.values()
    return bool(slots) and all(s.pool.idle_count >= 1 for s in slots)


def served_200(app: Served) -> int:
    return app.platform.router.stats.requests.get((app.app_id, "sync", 200), 0)


async def warm(app: Served) -> str:
    """One run, which leaves a connection to the runner kept; the runner's pid."""
    status, body, _ = await app.post(json={})
    assert status == 200, body
    assert kept(app)
    return str(body["text"])


@BOTH
async def test_runs_on_a_kept_runner_connection_each_get_their_own_reply(
    tmp_path: Path, face: str
) -> None:
    """Runs one after another go out on the one kept connection; each gets its reply, its own
    request id, and is counted."""
    async with served(Kept, tmp_path, face=face) as app:
        pid = await warm(app)
        ids = set()
        for _ in range(5):
            status, body, headers = await app.post(json={})
            assert (status, body) == (200, {"text": pid})
            assert headers["x-yurt-request-id"] == headers["x-fal-request-id"]
            ids.add(headers["x-fal-request-id"])
        assert len(ids) == 5
        assert kept(app) and in_flight(app) == 0
        assert served_200(app) == 6


@BOTH
async def test_a_runner_dying_mid_reply_is_503_and_replaced(tmp_path: Path, face: str) -> None:
    """A runner that dies after the head and part of the body of its reply gives 503
    runner_disconnected (nothing of the cut reply), is terminated, and a new runner serves."""
    async with served(Kept, tmp_path, face=face) as app:
        pid = await warm(app)
        (old,) = app.healthy()
        with structlog.testing.capture_logs() as logs:
            status, body, headers = await app.post("/cut", json={})
        assert status == 503 and body["error_type"] == "runner_disconnected"
        assert headers["x-fal-error-type"] == "runner_disconnected"
        assert any(
            e["event"] == "runner_terminate_requested"
            and e["reason"] == "runner_disconnected"
            and e["runner"] == old.runner_id
            for e in logs
        )
        assert app.platform.router.stats.requests[(app.app_id, "sync", 503)] == 1
        status, body, _ = await app.post(json={})
        assert status == 200 and body["text"] != pid


@BOTH
async def test_a_caller_hanging_up_leaves_its_run_to_finish(tmp_path: Path, face: str) -> None:
    """A caller that hangs up while its run is on the runner: the run ends there, is counted,
    gives its slot back, and the runner and its connection stay for the next caller."""
    async with served(Kept, tmp_path, face=face) as app:
        pid = await warm(app)
        parts = urlsplit(app.base)
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(post("/" + app.app_id, json.dumps({"seconds": 0.5}).encode()))
        await wait_until(lambda: in_flight(app) == 1, what="the run on its runner")
        writer.close()
        await wait_until(lambda: served_200(app) == 2, what="the run to finish")
        await wait_until(lambda: in_flight(app) == 0, what="its slot back")
        status, body, _ = await app.post(json={})
        assert (status, body) == (200, {"text": pid})
        assert kept(app)


@BOTH
async def test_runs_pipelined_behind_a_run_answer_in_order(tmp_path: Path, face: str) -> None:
    """Runs written at once behind a run on a kept connection are answered in order."""
    async with served(Kept, tmp_path, face=face) as app:
        await warm(app)
        parts = urlsplit(app.base)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            seconds = [0.2, 0.0, 0.0]
            writer.write(
                b"".join(
                    post("/" + app.app_id, json.dumps({"seconds": s}).encode()) for s in seconds
                )
            )
            responses = Responses()
            while len(responses.done) < 3:
                chunk = await asyncio.wait_for(reader.read(65536), 30)
                assert chunk, "the router closed the connection"
                responses.parser.feed_data(chunk)
        finally:
            writer.close()
        assert [r[0] for r in responses.done] == [200, 200, 200]
        assert len({r[1]["x-fal-request-id"] for r in responses.done}) == 3
        assert served_200(app) == 4


@BOTH
async def test_a_stream_after_a_reply_on_the_same_runner_connection(
    tmp_path: Path, face: str
) -> None:
    """A streamed reply on a kept connection is relayed whole, and the connection is kept for
    the plain replies after it."""
    async with served(FastApiStyle, tmp_path, face=face) as app:
        status, _, _ = await app.post("/dict", json={"a": 1})
        assert status == 200 and kept(app)
        async with app.session.post(app.url + "/stream", json={"count": 3}) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = await asyncio.wait_for(resp.content.read(), 30)
        assert events == b"".join(b'data: {"i": %d}\n\n' % i for i in range(3))
        status, body, _ = await app.post("/dict", json={"a": 2})
        assert (status, body) == (200, {"keys": ["a"]})
        await wait_until(lambda: in_flight(app) == 0, what="the slots back")
        assert kept(app)


@FAST
async def test_a_run_out_as_the_router_stops_taking_requests_is_answered_then_closed(
    tmp_path: Path, face: str
) -> None:
    """A run on its runner when the router stops taking requests still gets its reply, with
    ``connection: close``, and the connection closes after it."""
    async with served(Kept, tmp_path, face=face) as app:
        pid = await warm(app)
        parts = urlsplit(app.base)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(post("/" + app.app_id, json.dumps({"seconds": 0.3}).encode()))
            await wait_until(lambda: in_flight(app) == 1, what="the run on its runner")
            for conn in list(app.platform.router._fast):
                conn.close_when_idle()  # what the router's stop does first
            data = b""
            while chunk := await asyncio.wait_for(reader.read(65536), 30):
                data += chunk
        finally:
            writer.close()
        responses = Responses()
        responses.parser.feed_data(data)
        [(status, headers, body)] = responses.done
        assert status == 200 and json.loads(body) == {"text": pid}
        assert headers["connection"] == "close"


@BOTH
@pytest.mark.parametrize("endpoint", ["/late", "/late-asgi"])
async def test_a_streams_head_reaches_the_caller_before_its_late_first_event(
    tmp_path: Path, face: str, endpoint: str
) -> None:
    """A stream whose first event waits, a yurt generator's or a FastAPI StreamingResponse's:
    its head reaches the caller all the same (the fast lane holds it for its first chunk only
    briefly, the runner not at all), then the event once it is made."""
    gate = tmp_path / "gate"
    async with served(FastApiStyle, tmp_path, face=face) as app:
        status, _, _ = await app.post("/dict", json={"a": 1})
        assert status == 200 and kept(app)
        reader, writer = await open_stream(app, gate, endpoint)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert not gate.exists()  # the event is not made yet
            gate.touch()
            rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), DEADLINE)
            assert b'"late"' in rest
        finally:
            writer.close()


@FAST
async def test_a_caller_hanging_up_before_its_streams_first_event_ends_the_stream(
    tmp_path: Path, face: str
) -> None:
    """A caller that hangs up after its stream's head came but before its first event: the
    stream ends there and then (the slot given back, the run counted), not at the event."""
    gate = tmp_path / "gate"
    async with served(FastApiStyle, tmp_path, face=face) as app:
        status, _, _ = await app.post("/dict", json={"a": 1})
        assert status == 200 and kept(app)
        reader, writer = await open_stream(app, gate)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.close()
        await wait_until(lambda: in_flight(app) == 0, what="the slot back")
        assert served_200(app) == 2
        gate.touch()  # the runner's generator may end now
        status, body, _ = await app.post("/dict", json={"b": 1})
        assert (status, body) == (200, {"keys": ["b"]})


async def open_stream(
    app: Served, gate: Path, endpoint: str = "/late"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a POST to one of the app's late streams sent on it."""
    parts = urlsplit(app.base)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(post(f"/{app.app_id}{endpoint}", json.dumps({"path": str(gate)}).encode()))
    return reader, writer
