"""The router's two faces on one port: the fast lane, and the hand-over to aiohttp."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from apps import Echo, Gated, Rules
from support import Responses, served, wait_until

pytestmark = pytest.mark.timeout(120)


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()


async def exchange(url: str, *writes: bytes, expect: int) -> tuple[list, bool]:
    """Send each write (waiting for one more reply between them); return replies and EOF."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    responses = Responses()
    eof = False
    try:
        for i, data in enumerate(writes):
            writer.write(data)
            want = expect if i == len(writes) - 1 else i + 1
            while len(responses.done) < want:
                chunk = await asyncio.wait_for(reader.read(65536), 30)
                if not chunk:
                    eof = True
                    break
                responses.parser.feed_data(chunk)
        if not eof:
            try:
                eof = await asyncio.wait_for(reader.read(1), 0.3) == b""
            except TimeoutError:
                eof = False
    finally:
        writer.close()
    return responses.done, eof


PROMPT = json.dumps({"prompt": "hi"}).encode()
ECHOED = {"text": "echo: hi"}


async def test_fast_then_aiohttp_then_run_on_one_connection(tmp_path: Path) -> None:
    """A run, then yurt's own route, then a run again: the connection is handed over intact."""
    async with served(Echo, tmp_path) as app:
        path = "/" + app.app_id
        replies, eof = await exchange(
            app.platform.url, post(path, PROMPT), get("/_yurt/health"), post(path, PROMPT), expect=3
        )
        assert [r[0] for r in replies] == [200, 200, 200]
        assert json.loads(replies[0][2]) == ECHOED == json.loads(replies[2][2])
        assert json.loads(replies[1][2]) == {"status": "ok"}
        ids = [r[1]["x-fal-request-id"] for r in replies]
        assert len(set(ids)) == 3
        assert replies[0][1]["x-yurt-request-id"] == ids[0]
        assert not eof


async def test_pipelined_runs_answer_in_order(tmp_path: Path) -> None:
    """Three runs written at once are answered in order on the same connection."""
    async with served(Echo, tmp_path) as app:
        path = "/" + app.app_id
        bodies = [json.dumps({"prompt": str(i)}).encode() for i in range(3)]
        replies, _ = await exchange(
            app.platform.url, b"".join(post(path, b) for b in bodies), expect=3
        )
        assert [json.loads(r[2])["text"] for r in replies] == ["echo: 0", "echo: 1", "echo: 2"]


async def test_pipelined_platform_request_is_refused(tmp_path: Path) -> None:
    """A non-run request pipelined behind a run gets 400 and the connection closes."""
    async with served(Echo, tmp_path) as app:
        data = post("/" + app.app_id, PROMPT) + get("/_yurt/health")
        replies, eof = await exchange(app.platform.url, data, expect=2)
        assert [r[0] for r in replies] == [200, 400]
        assert json.loads(replies[1][2])["error_type"] == "bad_request"
        assert eof


async def test_malformed_request_is_400(tmp_path: Path) -> None:
    """Bytes that are not HTTP get 400 and the connection closes."""
    async with served(Echo, tmp_path) as app:
        replies, eof = await exchange(app.platform.url, b"HELLO THERE\r\n\r\n", expect=1)
        assert replies[0][0] == 400 and eof


async def test_expect_continue_and_percent_encoded_path(tmp_path: Path) -> None:
    """Expect: 100-continue is answered, and a percent-encoded path resolves."""
    async with served(Echo, tmp_path) as app:
        owner, name = app.app_id.split("/")
        path = f"/{owner}/%{ord(name[0]):02x}{name[1:]}"
        head = post(path, PROMPT, extra="expect: 100-continue\r\n")[: -len(PROMPT)]
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(head)
            assert await asyncio.wait_for(reader.readline(), 30) == b"HTTP/1.1 100 Continue\r\n"
            assert await reader.readline() == b"\r\n"
            writer.write(PROMPT)
            responses = Responses()
            while not responses.done:
                responses.parser.feed_data(await asyncio.wait_for(reader.read(65536), 30))
        finally:
            writer.close()
        assert responses.done[0][0] == 200 and json.loads(responses.done[0][2]) == ECHOED


async def test_http10_closes_after_reply(tmp_path: Path) -> None:
    """An HTTP/1.0 request without keep-alive gets its reply and then EOF."""
    async with served(Echo, tmp_path) as app:
        data = post("/" + app.app_id, PROMPT).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        replies, eof = await exchange(app.platform.url, data, expect=1)
        assert replies[0][0] == 200 and replies[0][1]["connection"] == "close" and eof


async def test_idle_connection_closes_after_keepalive_timeout(tmp_path: Path) -> None:
    """A client connection idle past keepalive_timeout is closed by the router."""
    async with served(Echo, tmp_path, keepalive_timeout=0.3) as app:
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(post("/" + app.app_id, PROMPT))
            responses = Responses()
            while not responses.done:
                responses.parser.feed_data(await asyncio.wait_for(reader.read(65536), 30))
            rest = await asyncio.wait_for(reader.read(65536), 30)
            assert rest == b""  # closed by the router, well within the wait
        finally:
            writer.close()


async def test_pipelined_platform_requests_are_handed_over_together(tmp_path: Path) -> None:
    """Two non-run requests written at once both reach aiohttp, answered in order."""
    async with served(Echo, tmp_path) as app:
        replies, _ = await exchange(
            app.platform.url, get("/_yurt/health") + get("/_yurt/apps"), expect=2
        )
        assert [r[0] for r in replies] == [200, 200]
        assert json.loads(replies[0][2]) == {"status": "ok"}
        assert json.loads(replies[1][2])[0]["app_id"] == app.app_id


async def test_encoded_crlf_in_query_cannot_smuggle_a_request(tmp_path: Path) -> None:
    """An encoded CRLF in the query stays encoded on both faces: the runner sees one request."""
    async with served(Rules, tmp_path) as app:
        path = "/" + app.app_id
        ok = json.dumps({"status": 200}).encode()
        smuggle = (
            f"{path}?x%20HTTP/1.1%0D%0Ahost:%20a%0D%0Acontent-length:%202%0D%0A%0D%0A{{}}"
            "POST%20/crash%20HTTP/1.1%0D%0Ax-pad:%20y"
        )
        for face in ("fast lane", "aiohttp"):
            writes = [post(path, ok), post(smuggle, ok), post(path, ok)]
            if face == "aiohttp":  # a first request that is not a run hands the connection over
                writes.insert(0, get("/_yurt/health"))
            replies, _ = await exchange(app.platform.url, *writes, expect=len(writes))
            runs = [json.loads(r[2]) for r in replies[-3:]]
            assert [r[0] for r in replies[-3:]] == [200, 200, 200], face
            assert len({r["text"] for r in runs}) == 1, face  # one runner: it never crashed


async def test_aiohttp_face_limits_body_and_answers_expect(tmp_path: Path) -> None:
    """On a handed-over connection: 100-continue is answered and an oversized body gets 413."""
    async with served(Echo, tmp_path, max_body_size=64) as app:
        path = "/" + app.app_id
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(get("/_yurt/health"))
            responses = Responses()
            while not responses.done:
                responses.parser.feed_data(await asyncio.wait_for(reader.read(65536), 30))
            writer.write(post(path, PROMPT, extra="expect: 100-continue\r\n")[: -len(PROMPT)])
            assert await asyncio.wait_for(reader.readline(), 30) == b"HTTP/1.1 100 Continue\r\n"
            assert await reader.readline() == b"\r\n"
            writer.write(PROMPT)
            while len(responses.done) < 2:
                responses.parser.feed_data(await asyncio.wait_for(reader.read(65536), 30))
            assert responses.done[1][0] == 200 and json.loads(responses.done[1][2]) == ECHOED
            writer.write(post(path, b"{" + b" " * 100 + b"}"))
            while len(responses.done) < 3:
                chunk = await asyncio.wait_for(reader.read(65536), 30)
                if not chunk:
                    break
                responses.parser.feed_data(chunk)
            assert responses.done[2][0] == 413
        finally:
            writer.close()


async def test_http10_keep_alive_is_announced(tmp_path: Path) -> None:
    """An HTTP/1.0 client asking for keep-alive is told the connection stays open."""
    async with served(Echo, tmp_path) as app:
        data = post("/" + app.app_id, PROMPT, extra="connection: keep-alive\r\n")
        data = data.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        replies, eof = await exchange(app.platform.url, data, data, expect=2)
        assert [r[0] for r in replies] == [200, 200]
        assert replies[0][1]["connection"] == "keep-alive" and not eof


async def read_all(reader: asyncio.StreamReader, responses: Responses) -> bool:
    """Read until the connection ends (True) or a reset (False); parse what came."""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            responses.parser.feed_data(chunk)
    except ConnectionResetError:
        return False
    return True


async def test_oversized_requests_are_answered_without_reading_them(tmp_path: Path) -> None:
    """413 before the body: at once for an Expect, mid-way for an endless chunked body, and
    readable by a client still sending a large declared body."""
    async with served(Echo, tmp_path, max_body_size=1024) as app:
        parts = urlsplit(app.platform.url)
        path = "/" + app.app_id
        # Expect: 100-continue and too large: 413 instead of 100, no body sent at all.
        head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 4096\r\n"
        replies, eof = await exchange(
            app.platform.url, (head + "expect: 100-continue\r\n\r\n").encode(), expect=1
        )
        assert replies[0][0] == 413 and replies[0][1]["connection"] == "close" and eof
        # A chunked body that never ends: answered once it passes the limit.
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            chunked = f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            writer.write(chunked.encode() + b"400\r\n" + b"y" * 1024 + b"\r\n")
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")  # past the limit, not ended
            responses = Responses()
            while not responses.done:
                responses.parser.feed_data(await asyncio.wait_for(reader.read(65536), 30))
            assert responses.done[0][0] == 413
        finally:
            writer.close()
        # A client writing a 2 MB body it declared reads the 413 (no reset before it).
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(post(path, b"z" * 2_000_000))
            responses = Responses()
            await read_all(reader, responses)
            assert [r[0] for r in responses.done] == [413]
        finally:
            writer.close()


async def test_oversized_headers_are_431(tmp_path: Path) -> None:
    """Headers past 64 KiB (give or take the read they began in) get 431 and the connection
    closes: they are not buffered without end."""
    async with served(Echo, tmp_path) as app:
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(f"POST /{app.app_id} HTTP/1.1\r\nhost: x\r\n".encode())
            for n in range(200):  # 800 KiB of headers, in separate writes
                writer.write(f"x-filler-{n}: {'a' * 4096}\r\n".encode())
                await writer.drain()
            responses = Responses()
            await read_all(reader, responses)
            assert responses.done[0][0] == 431
        finally:
            writer.close()


async def test_a_request_left_half_sent_is_closed_like_an_idle_one(tmp_path: Path) -> None:
    """A client that stops mid-headers holds its connection no longer than keepalive_timeout."""
    async with served(Echo, tmp_path, keepalive_timeout=0.3) as app:
        parts = urlsplit(app.platform.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(f"POST /{app.app_id} HTTP/1.1\r\nhost: x\r\n".encode())
            assert await asyncio.wait_for(reader.read(65536), 30) == b""
        finally:
            writer.close()


async def test_a_caller_that_hangs_up_while_waiting_is_no_longer_demand(tmp_path: Path) -> None:
    """A sync caller waiting for a runner that closes its connection stops waiting."""
    gate = tmp_path / "gate"
    async with served(Gated, tmp_path) as app:
        busy = asyncio.create_task(app.post(json={"gate": str(gate)}))
        await wait_until(lambda: app.platform.router.load(app.app_id).in_flight == 1, what="busy")
        parts = urlsplit(app.platform.url)
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(post("/" + app.app_id, json.dumps({"gate": str(gate)}).encode()))
        await wait_until(
            lambda: app.platform.router.load(app.app_id).waiting == 1, what="a waiting caller"
        )
        writer.close()
        await wait_until(
            lambda: app.platform.router.load(app.app_id).waiting == 0,
            what="the hung-up caller to stop waiting",
        )
        gate.touch()
        assert (await busy)[0] == 200
