"""yurt's realtime client, and fal-client's, against the session engine over a real socket.

A small websockets server stands in for the runner's websocket route: it runs the same
``run_session`` the runner does, so these pin the client side of the wire (and that fal's own
client reads yurt's frames) without starting a runner.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http import HTTPStatus

import pytest
from pydantic import BaseModel
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

import yurt
from yurt.client.realtime import RealtimeError
from yurt.realtime_channel import ChannelClosed
from yurt.realtime_endpoint import RealtimeEndpoint, realtime_of
from yurt.realtime_frames import FrameError, parse_max_buffering
from yurt.realtime_session import run_session

pytestmark = pytest.mark.timeout(60)


class In(BaseModel):
    """An input."""

    prompt: str
    blob: bytes = b""


class Out(BaseModel):
    """An output."""

    text: str
    blob: bytes


class Live(yurt.App):
    """The endpoints the server below serves."""

    @yurt.realtime("/realtime", session_timeout=30)
    def draw(self, input: In) -> Out:
        if input.prompt == "fail":
            raise RuntimeError("asked to")
        return Out(text="drawn: " + input.prompt, blob=input.blob[::-1])

    @yurt.realtime("/count", session_timeout=30)
    async def count(self, input: In) -> AsyncIterator[Out]:
        for ch in input.prompt:
            yield Out(text=ch, blob=b"")


ROUTES: dict[str, RealtimeEndpoint] = {
    f"/default/live{path}": rt
    for path, rt in (("/realtime", realtime_of(Live.draw)), ("/count", realtime_of(Live.count)))
    if rt is not None
}

PLAIN = "/default/live/ws"  # a plain websocket endpoint: one text message echoed


class WebsocketsChannel:
    """A websockets server connection as a session's Channel (test-only adapter)."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        try:
            frame = await self.ws.recv()
        except ConnectionClosed as exc:
            raise ChannelClosed(str(exc)) from exc
        if isinstance(frame, str):
            raise FrameError("text frame")
        return frame

    async def send(self, frame: bytes | str) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            raise ChannelClosed(str(exc)) from exc

    async def close(self) -> None:
        await self.ws.close()


class Server:
    """The websockets server on a thread of its own (the blocking client needs one)."""

    def __init__(self) -> None:
        self.headers: list[Headers] = []
        self.paths: list[str] = []
        self.ready = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _route(self, ws: ServerConnection, request: Request) -> Response | None:
        self.headers.append(request.headers)
        self.paths.append(request.path)
        if request.path.split("?")[0] not in {*ROUTES, PLAIN}:
            body = json.dumps({"detail": "no such app", "error_type": "not_found"}).encode()
            headers = Headers({"content-type": "application/json"})
            return Response(HTTPStatus.NOT_FOUND, "Not Found", headers, body)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path, _, query = ws.request.path.partition("?")
        if path == PLAIN:
            await ws.send("echo: " + str(await ws.recv()))
            return
        raw = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("max_buffering")
        await run_session(
            object(), WebsocketsChannel(ws), ROUTES[path], max_buffering=parse_max_buffering(raw)
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._route) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self._stop

    def __enter__(self) -> Server:
        self._thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Iterator[Server]:
    """The stand-in runner, serving /default/live/realtime and /default/live/count."""
    with Server() as running:
        yield running


def test_blocking_connect_sends_and_receives_with_the_key(server: Server) -> None:
    """connect() opens ws://.../owner/app/realtime with the key; each input gets its output."""
    with yurt.Client(server.url, key="id:secret") as client, client.connect("default/live") as rt:
        rt.send(In(prompt="a", blob=b"\x01\x02"))
        rt.send({"prompt": "b"})
        assert rt.recv(30) == {"text": "drawn: a", "blob": b"\x02\x01"}
        assert rt.recv(30) == {"text": "drawn: b", "blob": b""}
    assert server.headers[-1]["authorization"] == "Key id:secret"
    assert server.headers[-1]["user-agent"].startswith("yurt-client/")


def test_blocking_iteration_ends_in_the_sessions_error(server: Server) -> None:
    """Iterating yields outputs; the server-streaming end is fal's TIMEOUT, raised."""
    with yurt.Client(server.url) as client, client.connect("default/live", path="/count") as rt:
        rt.send({"prompt": "xyz"})
        got: list[str] = []
        with pytest.raises(RealtimeError) as info:
            for output in rt:
                got.append(output["text"])
    assert got == ["x", "y", "z"]
    assert info.value.error == "TIMEOUT"


def test_an_unknown_app_is_request_failed_with_the_routers_detail(server: Server) -> None:
    """A refused upgrade raises RequestFailed carrying the reply's status and detail."""
    client = yurt.Client(server.url)
    with pytest.raises(yurt.RequestFailed) as info, client.connect("default/nope"):
        pass
    assert (info.value.status, info.value.error_type) == (404, "not_found")
    assert info.value.detail == "no such app"


def test_nothing_listening_is_connection_failed() -> None:
    """No server: ConnectionFailed naming the URL."""
    client = yurt.Client("http://127.0.0.1:9", timeout=5)
    refused = pytest.raises(yurt.ConnectionFailed, match=r"127\.0\.0\.1:9")
    with refused, client.connect("default/live"):
        pass


async def test_async_connect_and_the_endpoint_error(server: Server) -> None:
    """The asyncio client reads outputs, then the endpoint's INTERNAL_ERROR as RealtimeError."""
    client = yurt.AsyncClient(server.url)
    async with client, client.connect("default/live", max_buffering=2) as rt:
        await rt.send({"prompt": "ok"})
        assert await rt.recv() == {"text": "drawn: ok", "blob": b""}
        await rt.send({"prompt": "fail"})
        with pytest.raises(RealtimeError) as info:
            await rt.recv()
    assert (info.value.error, info.value.reason) == ("INTERNAL_ERROR", "RuntimeError: asked to")
    assert server.paths[-1] == "/default/live/realtime?max_buffering=2"


def test_fal_clients_connection_reads_yurt_frames(server: Server) -> None:
    """fal-client's own RealtimeConnection, over a socket to yurt's session, gets the outputs
    and raises fal's RealtimeError on the ending, as it would against fal."""
    import fal_client.client as fal
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server.port}/default/live/realtime") as ws:
        rt = fal.RealtimeConnection(ws)
        rt.send({"prompt": "fal", "blob": b"ab"})
        assert rt.recv() == {"text": "drawn: fal", "blob": b"ba"}
        rt.send({"prompt": "fail"})
        with pytest.raises(fal.RealtimeError) as info:
            rt.recv()
    assert info.value.error == "INTERNAL_ERROR"


def test_ws_connect_gives_the_plain_websocket(server: Server) -> None:
    """ws_connect opens owner/app/path with the key and hands over websockets' connection."""
    with yurt.Client(server.url, key="id:s") as client, client.ws_connect("default/live/ws") as ws:
        ws.send("hi")
        assert ws.recv(30) == "echo: hi"
    assert server.paths[-1] == PLAIN
    assert server.headers[-1]["authorization"] == "Key id:s"


async def test_async_ws_connect_and_a_refused_path(server: Server) -> None:
    """The asyncio ws_connect speaks too; an unknown path is the router's RequestFailed."""
    client = yurt.AsyncClient(server.url)
    async with client, client.ws_connect("default/live", path="/ws") as ws:
        await ws.send("there")
        assert await ws.recv() == "echo: there"
    with pytest.raises(yurt.RequestFailed) as info:
        async with client.ws_connect("default/live", path="/nope"):
            pass
    assert info.value.status == 404
