"""The fast lane's refusals keep their turn and bound what they read: a real socket in front of
a request-core stand-in whose runner answers when the test says."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from yurt.errors import RequestError
from yurt.router.admitted import Admitted, SyncRun
from yurt.router.fastlane import FrontProtocol
from yurt.router.fastlane_state import Mode
from yurt.router.http import Reply, error_reply

from support import wait_until


class Router:
    """A request core that admits every request as a run of one app; serve() answers once
    ``answer`` is set."""

    def __init__(self) -> None:
        self.config = types.SimpleNamespace(max_body_size=1024, access_log=False, host="h")
        self.answer = asyncio.Event()
        self.started = asyncio.Event()
        self.resolved: Reply | None = None  # a refusal to admit every request with instead

    def admit(self, *args: Any, **kw: Any) -> Admitted | Reply:
        if self.resolved is not None:
            return self.resolved
        return SyncRun(None, b"/")  # type: ignore[arg-type]

    def too_large(self) -> RequestError:
        return RequestError("too large", status=413, error_type="request_too_large")

    def forward(self, run: SyncRun, headers: Any, body: bytes, on_sent: Any, land: Any) -> Any:
        return self.serve(on_sent=on_sent)  # always the task's way: serve() waits

    async def serve(
        self, *args: Any, on_sent: Callable[[], None] | None = None
    ) -> tuple[Reply, str]:
        self.started.set()
        if on_sent is not None:
            on_sent()
        await self.answer.wait()
        return Reply(200, [], b"ok"), "0" * 32


@pytest.fixture
async def lane() -> AsyncIterator[tuple[Router, int, list[dict[str, Any]], set[FrontProtocol]]]:
    router = Router()
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    conns: set[FrontProtocol] = set()
    server = await loop.create_server(
        lambda: FrontProtocol(router, router.config, None, conns),  # type: ignore[arg-type]
        "127.0.0.1",
        0,
    )
    yield router, server.sockets[0].getsockname()[1], errors, conns
    server.close()
    await server.wait_closed()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            data += chunk
    except ConnectionError:
        pass
    return data


async def test_headers_too_large_behind_a_request_in_flight_are_answered_in_turn(
    lane: tuple[Router, int, list[dict[str, Any]], set[FrontProtocol]],
) -> None:
    """The 431 waits for the reply to the request before it, and nothing fails meanwhile."""
    router, port, errors, conns = lane
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /o/a HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nA")
    await asyncio.wait_for(router.started.wait(), 30)  # the first request is with the runner
    writer.write(b"POST /o/a HTTP/1.1\r\nhost: x\r\n")
    for n in range(200):  # 800 KiB of headers
        writer.write(b"x-f%d: %s\r\n" % (n, b"a" * 4096))
        await writer.drain()
    [conn] = conns

    def refused() -> bool:  # the fast lane has read enough of them to refuse the request
        return bool(conn.queue) or conn.mode is Mode.LINGER

    await wait_until(refused, what="the oversized headers to be refused")
    router.answer.set()
    data = await read_to_end(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 431" in data
    assert errors == []


async def test_a_refused_request_with_an_endless_body_is_answered_past_the_limit(
    lane: tuple[Router, int, list[dict[str, Any]], set[FrontProtocol]],
) -> None:
    """An unknown app's 404 goes out once the body passes the size limit, not never."""
    router, port, _, _ = lane
    router.resolved = error_reply(404, "app_not_found", "no such app")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /o/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(4):  # 4 KiB, past the 1 KiB limit, and never ended
        writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.read(64), 30)
    writer.close()
    assert head.startswith(b"HTTP/1.1 404")
