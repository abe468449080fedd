"""The queue on the fast lane: one connection mixes sync runs and queue calls without leaving it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_fastlane import PROMPT, exchange, get, post

from apps import Echo
from queue_apps import Retries
from support import served

pytestmark = pytest.mark.timeout(120)


def events(body: bytes) -> list[dict[str, object]]:
    """The JSON events of a server-sent event stream."""
    return [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")
    ]


async def test_sync_and_queue_share_a_connection_in_the_fast_lane(tmp_path: Path) -> None:
    """Run, submit, stream, result, run on one connection: all answered, none handed over."""
    async with served(Echo, tmp_path) as app:
        path = "/" + app.app_id
        replies, eof = await exchange(app.platform.url, post(path, PROMPT), expect=1)
        assert replies[0][0] == 200
        submitted, _ = await exchange(app.platform.url, post("/queue" + path, PROMPT), expect=1)
        request_id = json.loads(submitted[0][2])["request_id"]
        base = f"/queue{path}/requests/{request_id}"
        replies, eof = await exchange(
            app.platform.url,
            post(path, PROMPT),
            post("/queue" + path, PROMPT),
            get(base + "/status/stream"),
            get(base),
            post(path, PROMPT),
            expect=5,
        )
        assert [r[0] for r in replies] == [200, 200, 200, 200, 200]
        stream = replies[2]
        assert stream[1]["content-type"] == "text/event-stream"
        assert stream[1]["transfer-encoding"] == "chunked"
        assert stream[1]["x-fal-request-id"] == request_id
        assert events(stream[2])[-1]["status"] == "COMPLETED"
        assert json.loads(replies[3][2]) == {"text": "echo: hi"}
        assert replies[3][1]["x-fal-request-id"] == request_id
        assert not eof
        web = app.platform.router._web
        assert web is not None and not web.connections  # nothing went to aiohttp


async def test_pipelined_queue_calls_answer_in_order(tmp_path: Path) -> None:
    """A submit and a status request written at once are answered in order."""
    async with served(Echo, tmp_path) as app:
        path = "/queue/" + app.app_id
        submitted, _ = await exchange(app.platform.url, post(path, PROMPT), expect=1)
        status_path = urlsplit(json.loads(submitted[0][2])["status_url"]).path
        replies, eof = await exchange(
            app.platform.url, post(path, PROMPT) + get(status_path), expect=2
        )
        assert replies[0][0] == 200 and replies[1][0] in (200, 202)
        assert "queue_position" in json.loads(replies[0][2])
        assert not eof


async def test_http10_status_stream_ends_with_the_connection(tmp_path: Path) -> None:
    """An HTTP/1.0 client gets the stream unchunked, ended by closing the connection."""
    async with served(Echo, tmp_path) as app:
        path = "/queue/" + app.app_id
        submitted, _ = await exchange(app.platform.url, post(path, PROMPT), expect=1)
        request_id = json.loads(submitted[0][2])["request_id"]
        request = f"GET {path}/requests/{request_id}/status/stream HTTP/1.0\r\nhost: x\r\n\r\n"
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(request.encode())
            raw = await asyncio.wait_for(reader.read(), 30)  # to EOF: the server closes
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"transfer-encoding" not in head.lower()
        assert events(body)[-1]["status"] == "COMPLETED"


async def test_request_id_in_the_path_cannot_inject_headers(tmp_path: Path) -> None:
    """An encoded CRLF in a queue request id gets 404 and never reaches a response header."""
    async with served(Echo, tmp_path) as app:
        bad = f"/queue/{app.app_id}/requests/abc%0d%0aX-Injected:%201"
        for request in (
            get(bad + "/status"),
            f"PUT {bad}/cancel HTTP/1.1\r\nhost: x\r\n\r\n".encode(),
        ):
            replies, _ = await exchange(app.platform.url, request, expect=1)
            assert replies[0][0] == 404
            assert "x-injected" not in replies[0][1]
            assert len(replies[0][1]["x-fal-request-id"]) == 32


async def test_continue_waits_for_an_open_stream_to_end(tmp_path: Path) -> None:
    """A submit with Expect: 100-continue pipelined behind an open status stream gets its
    100 Continue only after the stream's last chunk: replies keep their order."""
    gate = tmp_path / "gate"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "gate": str(gate)})
        stream = urlsplit(sub["status_url"]).path + "/stream"
        body = json.dumps({"journal": str(tmp_path / "j"), "fail_times": 0}).encode()
        submit = (
            f"POST /queue/{app.app_id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n"
        ).encode()
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(get(stream) + submit)
            seen = await asyncio.wait_for(reader.readuntil(b"IN_PROGRESS"), 30)
            gate.touch()
            seen += await asyncio.wait_for(reader.readuntil(b"100 Continue\r\n\r\n"), 30)
            assert seen.index(b"0\r\n\r\n") < seen.index(b"HTTP/1.1 100 Continue")
            writer.write(body)
            seen = await asyncio.wait_for(reader.readuntil(b"queue_position"), 30)
            assert seen.startswith(b"HTTP/1.1 200 ")
        finally:
            writer.close()
