"""Slow clients: a request whose head or body arrives too slowly gets a JSON 408 and its
connection closes, on a real router with small configured deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from error_apps import Holds, Shapes

from support import DEADLINE, served

pytestmark = pytest.mark.timeout(120)

# Small enough for a quick test, large enough that a loaded machine's own delays stay under them.
FAST = {"header_timeout": 1.0, "body_timeout": 1.0, "min_body_rate": 100.0}
DRIP = b"          "  # 10 bytes, each 0.5 s: 20 bytes/s, under min_body_rate
DRIPS = 40  # 20 s: far past either deadline, short of holding up a failing test for long


async def drip_until_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: asyncio.Future[bytes]
) -> bytes:
    """DRIP every 0.5 s until ``answer`` comes; fail if it has not after DRIPS of them."""
    for _ in range(DRIPS):
        done, _ = await asyncio.wait([answer], timeout=0.5)
        if done:
            return answer.result()
        try:
            writer.write(DRIP)
            await writer.drain()
        except ConnectionError:
            break
    if not answer.done():
        answer.cancel()
        pytest.fail(f"the router still read a dripping request after {DRIPS / 2:g}s")
    return await asyncio.wait_for(answer, DEADLINE)


async def drip(url: str, head: bytes) -> tuple[bytes, float]:
    """Send ``head``, then drip until the router answers; returns what it answered (up to its
    close) and the seconds that took."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    t0 = time.monotonic()
    try:
        writer.write(head)
        answer = asyncio.ensure_future(reader.read())  # everything up to the router's close
        data = await drip_until_answered(reader, writer, answer)
        return data, time.monotonic() - t0
    finally:
        writer.close()


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_408(answer: bytes) -> None:
    """A JSON 408 with its error type, on a connection the router closed."""
    assert answer, "the router closed without answering"
    status, headers, body = parse(answer)
    assert status == 408, answer
    assert headers["content-type"] == "application/json"
    assert headers["x-yurt-error-type"] == headers["x-fal-error-type"] == "request_read_timeout"
    assert body["error_type"] == "request_read_timeout" and body["detail"]


async def test_a_body_dripped_slower_than_the_minimum_rate_gets_408(tmp_path: Path) -> None:
    """A body trickling in under min_body_rate gets 408 instead of holding the connection, while
    one slower than body_timeout but above the rate is served."""
    async with served(Shapes, tmp_path, **FAST) as app:
        assert await steady_body(app.platform.url, app.app_id) == {"prompt": "x" * 1000}
        head = (
            f"POST /{app.app_id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "content-length: 100000\r\n\r\n"
        ).encode()
        # At 20 bytes/s the body would take well over an hour.
        answer, took = await drip(app.platform.url, head)
        assert_408(answer)
        assert took < DRIPS / 2


async def test_a_head_sent_slowly_gets_408(tmp_path: Path) -> None:
    """A request line and headers still unfinished after header_timeout get 408."""
    async with served(Shapes, tmp_path, **FAST) as app:
        head = f"POST /{app.app_id} HTTP/1.1\r\nhost: x\r\nx-drip: ".encode()
        # Each drip extends the header value: activity that never completes the head.
        answer, took = await drip(app.platform.url, head)
        assert_408(answer)
        assert took < DRIPS / 2


async def test_a_body_after_a_handed_over_request_must_keep_the_rate(tmp_path: Path) -> None:
    """On a connection the aiohttp face serves, a dripped body gets 408 too, and a close."""
    async with served(Shapes, tmp_path, **FAST) as app:
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(b"GET /_yurt/health HTTP/1.1\r\nhost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), DEADLINE)
            assert first.startswith(b"HTTP/1.1 200")
            writer.write(
                f"POST /{app.app_id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                "content-length: 100000\r\n\r\n".encode()
            )
            answer = asyncio.ensure_future(reader.read(65536))
            data = await drip_until_answered(reader, writer, answer)
            assert b"\r\n\r\n" in data
            status, headers, body = parse(data)
            assert status == 408 and body["error_type"] == "request_read_timeout"
            assert headers["x-yurt-error-type"] == "request_read_timeout"
            assert headers["connection"] == "close"  # the rest of that body is not read
        finally:
            writer.close()


async def steady_body(url: str, app_id: str) -> dict[str, object]:
    """POST a body arriving over longer than body_timeout but above the rate; its reply."""
    body = b'{"prompt": "' + b"x" * 1000 + b'"}'
    head = (
        f"POST /{app_id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head)
        # 150 bytes every 0.5 s: 300 bytes/s, three times the minimum, for about 3.5 s.
        for i in range(0, len(body), 150):
            writer.write(body[i : i + 150])
            await asyncio.sleep(0.5)
        data = await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()
    status, _, parsed = parse(data)
    assert status == 200, data
    return parsed


async def test_a_pipelined_head_is_not_timed_while_the_request_before_it_is_served(
    tmp_path: Path,
) -> None:
    """A head begun behind a request served for longer than header_timeout has its whole
    header_timeout once that request is answered, not a deadline already spent."""
    release = tmp_path / "release"
    body = json.dumps({"release": str(release)}).encode()
    config = {**FAST, "header_timeout": 3.0}
    async with served(Holds, tmp_path, **config) as app:
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            head = (
                f"POST /{app.app_id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n"
            ).encode()
            writer.write(head + b"\r\n" + body + head)  # the second head, unfinished
            await writer.drain()
            await asyncio.sleep(4.5)  # served past header_timeout, the second head waiting
            release.touch()
            first = await asyncio.wait_for(reader.readuntil(b'"released"}'), DEADLINE)
            assert first.startswith(b"HTTP/1.1 200"), first
            await asyncio.sleep(1.0)  # several sweeps, well inside a fresh header_timeout
            writer.write(b"\r\n" + body)
            second = await asyncio.wait_for(reader.readuntil(b"}"), DEADLINE)
            assert second.startswith(b"HTTP/1.1 200"), second
        finally:
            writer.close()
