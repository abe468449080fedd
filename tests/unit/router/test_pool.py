"""Tests for the router's keep-alive upstream connection pool."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web

from yurt.router.pool import ConnectionPool, UpstreamError

pytestmark = pytest.mark.asyncio

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
DEADLINE = 5.0


async def wait_until(predicate: Callable[[], bool], deadline: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds, failing the test after ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def header_names(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Lower-cased header names of a response."""
    return {name.lower() for name, _ in headers}


# -- aiohttp upstream --------------------------------------------------------


@dataclass
class AppServer:
    """A running aiohttp upstream and what it has observed."""

    port: int
    transports: list[object] = field(default_factory=list)
    requests: list[web.Request] = field(default_factory=list)

    def connection_count(self) -> int:
        """Distinct TCP connections the server has handled requests on."""
        return len({id(t) for t in self.transports})


@pytest_asyncio.fixture
async def app_server() -> AsyncIterator[AppServer]:
    """An aiohttp server on an ephemeral port with echo/chunked/close routes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    state = AppServer(port=sock.getsockname()[1])
    gate: dict[str, asyncio.Event] = {}

    async def track(request: web.Request) -> None:
        state.transports.append(request.transport)
        state.requests.append(request)

    async def echo(request: web.Request) -> web.Response:
        await track(request)
        body = await request.read()
        return web.Response(
            status=201,
            body=body,
            headers={"X-Echo-Custom": request.headers.get("X-Custom", ""), "X-Reply": "yes"},
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        await track(request)
        resp = web.StreamResponse(headers={"X-Kind": "chunked"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"alpha-", b"beta-", b"gamma"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def close(request: web.Request) -> web.Response:
        await track(request)
        resp = web.Response(text="bye")
        resp.force_close()
        return resp

    async def barrier(request: web.Request) -> web.Response:
        # Hold every request until the expected number is in flight at once,
        # which proves they travel on separate connections.
        await track(request)
        expected = int(request.query["n"])
        event = gate.setdefault("barrier", asyncio.Event())
        if sum(r.path == "/barrier" for r in state.requests) >= expected:
            event.set()
        await asyncio.wait_for(event.wait(), DEADLINE)
        return web.Response(body=request.query["i"].encode())

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close", close)
    app.router.add_get("/barrier", barrier)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield state
    finally:
        await runner.cleanup()
        sock.close()


@pytest_asyncio.fixture
async def pools() -> AsyncIterator[list[ConnectionPool]]:
    """A registry of pools that are all closed after the test."""
    created: list[ConnectionPool] = []
    try:
        yield created
    finally:
        for pool in created:
            await pool.close()


def make_pool(pools: list[ConnectionPool], port: int, *, max_idle: int = 64) -> ConnectionPool:
    """Create a pool to 127.0.0.1:``port`` that the ``pools`` fixture will close."""
    pool = ConnectionPool("127.0.0.1", port, max_idle=max_idle)
    pools.append(pool)
    return pool


# -- raw upstream for misbehaving servers -----------------------------------


@dataclass
class RawServer:
    """A raw asyncio server and what it has observed."""

    port: int
    connections: int = 0
    requests: int = 0
    closed_by_peer: int = 0
    request_seen: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, RawServer], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """Read one request (head and Content-Length body); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


async def wait_for_eof(reader: asyncio.StreamReader, state: RawServer) -> None:
    """Block until the client closes the connection, then record that."""
    while await reader.read(65536):
        pass
    state.closed_by_peer += 1


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    """Run ``handler`` for every connection on an ephemeral port; clean up afterwards."""
    state = RawServer(port=0)
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        writers.append(writer)
        state.connections += 1
        try:
            await handler(reader, writer, state)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for writer in writers:
            writer.close()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def keep_alive_responder(response: bytes) -> Handler:
    """A handler answering every request on the connection with ``response``."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        while await read_request(reader) is not None:
            state.requests += 1
            state.request_seen.set()
            writer.write(response)
            await writer.drain()

    return handler


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- tests against aiohttp ---------------------------------------------------


async def test_round_trip_preserves_body_and_headers(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """A POST round-trips status, body and end-to-end headers; hop-by-hop ones are dropped."""
    pool = make_pool(pools, app_server.port)
    body = b"x" * 10_000 + b"\x00\xff"
    resp = await pool.request(
        b"POST", b"/echo?q=1", [(b"X-Custom", b"hello"), (b"Accept", b"*/*")], body, 5.0
    )
    assert resp.status == 201
    assert resp.body == body
    headers = dict(resp.headers)
    assert headers[b"X-Echo-Custom"] == b"hello"
    assert headers[b"X-Reply"] == b"yes"
    assert not header_names(resp.headers) & HOP_BY_HOP
    seen = app_server.requests[0]
    assert seen.method == "POST"
    assert seen.path_qs == "/echo?q=1"
    assert seen.headers["Host"] == f"127.0.0.1:{app_server.port}"
    assert seen.headers["Content-Length"] == str(len(body))


async def test_sequential_requests_reuse_one_connection(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """Sequential requests travel on a single kept-alive connection."""
    pool = make_pool(pools, app_server.port)
    for i in range(5):
        resp = await pool.request(b"POST", b"/echo", [], b"n%d" % i, 5.0)
        assert resp.body == b"n%d" % i
        assert pool.idle_count == 1
    assert app_server.connection_count() == 1


async def test_empty_body_get_reuses_connection(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """A bodiless GET gets an empty body and leaves the connection reusable."""
    pool = make_pool(pools, app_server.port)
    for _ in range(2):
        resp = await pool.request(b"GET", b"/echo", [], b"", None)
        assert (resp.status, resp.body) == (201, b"")
    assert app_server.connection_count() == 1


async def test_chunked_response_is_dechunked(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """A chunked response arrives as one de-chunked body without transfer-encoding."""
    pool = make_pool(pools, app_server.port)
    resp = await pool.request(b"GET", b"/chunked", [], b"", 5.0)
    assert resp.status == 200
    assert resp.body == b"alpha-beta-gamma"
    assert dict(resp.headers)[b"X-Kind"] == b"chunked"
    assert not header_names(resp.headers) & HOP_BY_HOP
    resp = await pool.request(b"GET", b"/chunked", [], b"", 5.0)
    assert resp.body == b"alpha-beta-gamma"
    assert app_server.connection_count() == 1


async def test_concurrent_requests_use_separate_connections(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """Concurrent requests each get their own connection and their own response."""
    pool = make_pool(pools, app_server.port)
    n = 8
    results = await asyncio.gather(
        *(pool.request(b"GET", b"/barrier?n=%d&i=%d" % (n, i), [], b"", 10.0) for i in range(n))
    )
    assert [r.body for r in results] == [str(i).encode() for i in range(n)]
    assert app_server.connection_count() == n
    assert pool.idle_count == n


async def test_max_idle_caps_kept_connections(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """Connections beyond max_idle are closed after their response instead of pooled."""
    pool = make_pool(pools, app_server.port, max_idle=2)
    n = 4
    await asyncio.gather(
        *(pool.request(b"GET", b"/barrier?n=%d&i=%d" % (n, i), [], b"", 10.0) for i in range(n))
    )
    assert pool.idle_count == 2


async def test_connection_close_response_is_not_reused(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """A response carrying Connection: close is not followed by reuse of its connection."""
    pool = make_pool(pools, app_server.port)
    for _ in range(2):
        resp = await pool.request(b"GET", b"/close", [], b"", 5.0)
        assert resp.body == b"bye"
        assert b"connection" not in header_names(resp.headers)
        assert pool.idle_count == 0
    assert app_server.connection_count() == 2


async def test_close_then_request_raises(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """close() drops idle connections and later requests fail with connect_error."""
    pool = make_pool(pools, app_server.port)
    await pool.request(b"GET", b"/echo", [], b"", 5.0)
    assert pool.idle_count == 1
    await pool.close()
    assert pool.idle_count == 0
    with pytest.raises(UpstreamError) as info:
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
    assert info.value.kind == "connect_error"


# -- tests against misbehaving raw servers -----------------------------------


async def test_refused_port_is_connect_refused(pools: list[ConnectionPool]) -> None:
    """Connecting to a port nobody listens on fails with connect_refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    pool = make_pool(pools, port)
    with pytest.raises(UpstreamError) as info:
        await pool.request(b"GET", b"/", [], b"", 5.0)
    assert info.value.kind == "connect_refused"


async def test_server_closing_mid_response_is_disconnected(pools: list[ConnectionPool]) -> None:
    """A response cut short by the server closing fails with disconnected."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-some")
        await writer.drain()

    async with raw_server(handler) as server:
        pool = make_pool(pools, server.port)
        with pytest.raises(UpstreamError) as info:
            await pool.request(b"POST", b"/", [], b"payload", 5.0)
        assert info.value.kind == "disconnected"
        assert pool.idle_count == 0


async def test_malformed_response_is_disconnected(pools: list[ConnectionPool]) -> None:
    """Bytes that are not HTTP fail the request with disconnected."""
    async with raw_server(keep_alive_responder(b"SSH-2.0-nope\r\n\r\n")) as server:
        pool = make_pool(pools, server.port)
        with pytest.raises(UpstreamError) as info:
            await pool.request(b"GET", b"/", [], b"", 5.0)
        assert info.value.kind == "disconnected"
        assert pool.idle_count == 0


async def test_silent_server_times_out_and_connection_is_dropped(
    pools: list[ConnectionPool],
) -> None:
    """A server that never answers yields timeout, and that connection is closed, not reused."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        state.requests += 1
        await wait_for_eof(reader, state)

    async with raw_server(handler) as server:
        pool = make_pool(pools, server.port)
        with pytest.raises(UpstreamError) as info:
            await pool.request(b"GET", b"/", [], b"", 0.2)
        assert info.value.kind == "timeout"
        assert pool.idle_count == 0
        await wait_until(lambda: server.closed_by_peer == 1)
        with pytest.raises(UpstreamError):
            await pool.request(b"GET", b"/", [], b"", 0.05)
        await wait_until(lambda: server.connections == 2)


async def test_idle_connection_closed_by_server_is_dropped(pools: list[ConnectionPool]) -> None:
    """An idle connection the server closes leaves the pool; the next request reconnects."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        state.requests += 1
        writer.write(OK)  # keep-alive response, then hang up while the client idles
        await writer.drain()

    async with raw_server(handler) as server:
        pool = make_pool(pools, server.port)
        assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
        await wait_until(lambda: pool.idle_count == 0)
        assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
        assert server.connections == 2


async def test_cancellation_closes_connection(pools: list[ConnectionPool]) -> None:
    """Cancelling a waiting request closes its connection and propagates CancelledError."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        state.request_seen.set()
        await wait_for_eof(reader, state)

    async with raw_server(handler) as server:
        pool = make_pool(pools, server.port)
        task = asyncio.create_task(pool.request(b"GET", b"/", [], b"", None))
        await asyncio.wait_for(server.request_seen.wait(), DEADLINE)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.idle_count == 0
        await wait_until(lambda: server.closed_by_peer == 1)


async def test_unsolicited_bytes_on_idle_connection_close_it(
    pools: list[ConnectionPool],
) -> None:
    """An idle connection that receives bytes nobody asked for is closed and dropped."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.wait_for(state.request_seen.wait(), DEADLINE)
        writer.write(OK)
        await writer.drain()
        await wait_for_eof(reader, state)

    async with raw_server(handler) as server:
        pool = make_pool(pools, server.port)
        await pool.request(b"GET", b"/", [], b"", 5.0)
        assert pool.idle_count == 1
        server.request_seen.set()  # tells the server to send the stray response
        await wait_until(lambda: pool.idle_count == 0)
        await wait_until(lambda: server.closed_by_peer == 1)


async def test_bytes_after_complete_response_discard_connection(
    pools: list[ConnectionPool],
) -> None:
    """Extra bytes arriving with a complete response are not left for the next request."""
    async with raw_server(keep_alive_responder(OK + b"HTTP/1.1 200 OK\r\n")) as server:
        pool = make_pool(pools, server.port)
        assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
        assert pool.idle_count == 0
        assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
        assert server.connections == 2


async def test_head_response_has_no_body_and_keeps_connection(
    pools: list[ConnectionPool],
) -> None:
    """A HEAD response with Content-Length completes without a body and the connection is reused."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-A: 1\r\n\r\n"
    async with raw_server(keep_alive_responder(head)) as server:
        pool = make_pool(pools, server.port)
        for _ in range(3):
            resp = await pool.request(b"HEAD", b"/", [], b"", 5.0)
            assert (resp.status, resp.headers, resp.body) == (200, [(b"X-A", b"1")], b"")
        assert pool.idle_count == 1
        assert server.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_ignore_content_length(
    pools: list[ConnectionPool], status: int
) -> None:
    """204 and 304 responses have no body even with Content-Length, and keep the connection."""
    response = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    async with raw_server(keep_alive_responder(response)) as server:
        pool = make_pool(pools, server.port)
        for _ in range(2):
            resp = await pool.request(b"GET", b"/", [], b"", 5.0)
            assert (resp.status, resp.body) == (status, b"")
        assert server.connections == 1


async def test_interim_100_continue_is_skipped(pools: list[ConnectionPool]) -> None:
    """An interim 100 Continue is skipped and the final response returned."""
    response = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with raw_server(keep_alive_responder(response)) as server:
        pool = make_pool(pools, server.port)
        resp = await pool.request(b"POST", b"/", [(b"Expect", b"100-continue")], b"abc", 5.0)
        assert (resp.status, resp.body) == (200, b"ok")
        assert pool.idle_count == 1


async def test_eof_delimited_body(pools: list[ConnectionPool]) -> None:
    """A response with neither Content-Length nor chunking ends at EOF and is not reused."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-")
        await writer.drain()
        writer.write(b"eof")
        await writer.drain()

    async with raw_server(handler) as server:
        pool = make_pool(pools, server.port)
        resp = await pool.request(b"GET", b"/", [], b"", 5.0)
        assert (resp.status, resp.body) == (200, b"until-eof")
        assert pool.idle_count == 0


async def test_a_connection_idle_past_its_age_is_not_reused(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """A connection idle longer than max_idle_age (the server may be closing it) is replaced."""
    pool = ConnectionPool("127.0.0.1", app_server.port, max_idle_age=0.0)
    pools.append(pool)
    for i in range(3):
        assert (await pool.request(b"POST", b"/echo", [], b"n%d" % i, 5.0)).body == b"n%d" % i
    assert app_server.connection_count() == 3


# -- send: a request without a coroutine, on an idle connection --------------


async def test_send_goes_out_on_an_idle_connection_only(
    app_server: AppServer, pools: list[ConnectionPool]
) -> None:
    """With no idle connection ``send`` returns None (the caller connects with ``request``);
    with one it returns the response's future, and the connection goes back to the pool."""
    pool = make_pool(pools, app_server.port)
    assert pool.send(b"POST", b"/echo", [], b"a", 5.0) is None
    await pool.request(b"POST", b"/echo", [], b"a", 5.0)
    sent = pool.send(b"POST", b"/echo", [(b"x-custom", b"c")], b"b", 0.25)
    assert sent is not None
    resp = await asyncio.wait_for(sent, DEADLINE)
    assert (resp.status, resp.body) == (201, b"b")
    assert (b"X-Echo-Custom", b"c") in resp.headers
    assert pool.idle_count == 1 and app_server.connection_count() == 1
    # The answered request's deadline (and some) passes while the connection is idle: it is
    # not timed out, and the next request goes on it.
    loop = asyncio.get_running_loop()
    past = loop.time() + 0.25 + 0.5
    await wait_until(lambda: loop.time() > past)
    assert pool.idle_count == 1
    again = await pool.request(b"POST", b"/echo", [], b"c", 5.0)
    assert again.status == 201 and app_server.connection_count() == 1
    await pool.close()
    assert pool.send(b"POST", b"/echo", [], b"c", 5.0) is None  # closed: request raises


def answers_once_then(
    then: Callable[[asyncio.StreamReader, RawServer], Awaitable[None]],
) -> Handler:
    """A handler answering the first request on a connection, then doing ``then``."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        state.requests += 1
        state.request_seen.set()
        await then(reader, state)

    return handler


async def test_a_sent_request_times_out_as_a_requested_one(pools: list[ConnectionPool]) -> None:
    """Past its timeout the future fails with a timeout error and the connection is closed."""
    async with raw_server(answers_once_then(wait_for_eof)) as server:
        pool = make_pool(pools, server.port)
        await pool.request(b"GET", b"/", [], b"", 5.0)
        sent = pool.send(b"GET", b"/", [], b"", 0.2)
        assert sent is not None
        with pytest.raises(UpstreamError) as info:
            await asyncio.wait_for(sent, DEADLINE)
        assert info.value.kind == "timeout"
        assert pool.idle_count == 0
        await wait_until(lambda: server.closed_by_peer == 1)


async def test_a_later_deadline_holds_past_the_timer_an_earlier_request_set(
    pools: list[ConnectionPool],
) -> None:
    """A request whose deadline is later than the one before it on the connection times out
    at its own deadline, not at the earlier request's."""
    async with raw_server(answers_once_then(wait_for_eof)) as server:
        pool = make_pool(pools, server.port)
        await pool.request(b"GET", b"/", [], b"", 0.2)  # answered: its timer stays set
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamError) as info:
            await pool.request(b"GET", b"/", [], b"", 0.6)
        assert info.value.kind == "timeout"
        assert loop.time() - started >= 0.6 - 0.002  # the clock's tick, no more
        await wait_until(lambda: server.closed_by_peer == 1)


async def test_a_cancelled_send_drops_its_connection_at_once(
    pools: list[ConnectionPool],
) -> None:
    """A future the caller cancelled closes its connection there and then, as a cancelled
    ``request`` does: no answer, however late, can land on a reused connection."""
    async with raw_server(answers_once_then(wait_for_eof)) as server:
        pool = make_pool(pools, server.port)
        await pool.request(b"GET", b"/", [], b"", 5.0)
        sent = pool.send(b"GET", b"/", [], b"", 3600.0)
        assert sent is not None
        await asyncio.wait_for(server.request_seen.wait(), DEADLINE)
        sent.cancel()
        await wait_until(lambda: server.closed_by_peer == 1)
        assert pool.idle_count == 0
