"""``yurt.Client`` and ``yurt.AsyncClient`` against a real router, runners and queue.

Each scenario runs with both clients. The router shares the test's event loop, so the blocking
client is driven from a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from yurt import (
    AsyncClient,
    AsyncRequestHandle,
    Client,
    Completed,
    ConnectionFailed,
    InProgress,
    Queued,
    RequestFailed,
    RequestHandle,
    Status,
)

from client_apps import Gated
from support import DEADLINE, served

pytestmark = pytest.mark.timeout(180)


class Handle:
    """One queued request, the same awaitable surface over either client's handle."""

    def __init__(self, handle: RequestHandle | AsyncRequestHandle) -> None:
        self.handle = handle
        self.request_id = handle.request_id

    async def _call(self, name: str, *args: Any, **kw: Any) -> Any:
        method = getattr(self.handle, name)
        if isinstance(self.handle, AsyncRequestHandle):
            return await method(*args, **kw)
        return await asyncio.to_thread(method, *args, **kw)

    async def status(self, *, with_logs: bool = False) -> Status:
        return await self._call("status", with_logs=with_logs)

    async def result(self) -> Any:
        return await self._call("result")

    async def cancel(self) -> str:
        return await self._call("cancel")

    async def events(
        self, *, with_logs: bool = False, until: type[Status] = Completed
    ) -> list[Any]:
        """The stream's events up to the first of type ``until``."""

        def stop(seen: list[Status]) -> bool:
            return isinstance(seen[-1], until)

        handle = self.handle
        if isinstance(handle, AsyncRequestHandle):
            seen: list[Status] = []
            async with contextlib.aclosing(handle.iter_events(with_logs=with_logs)) as stream:
                async for event in stream:
                    seen.append(event)
                    if stop(seen):
                        break
            return seen

        def collect() -> list[Status]:
            assert isinstance(handle, RequestHandle)
            got: list[Status] = []
            with contextlib.closing(handle.iter_events(with_logs=with_logs)) as stream:
                for event in stream:
                    got.append(event)
                    if stop(got):
                        break
            return got

        return await asyncio.to_thread(collect)


class Caller:
    """``run`` and ``submit`` of either client, awaitable."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    async def run(self, *args: Any, **kw: Any) -> Any:
        if isinstance(self.client, AsyncClient):
            return await self.client.run(*args, **kw)
        return await asyncio.to_thread(self.client.run, *args, **kw)

    async def submit(self, *args: Any, **kw: Any) -> Handle:
        if isinstance(self.client, AsyncClient):
            return Handle(await self.client.submit(*args, **kw))
        return Handle(await asyncio.to_thread(self.client.submit, *args, **kw))

    async def subscribe(self, *args: Any, **kw: Any) -> Any:
        if isinstance(self.client, AsyncClient):
            return await self.client.subscribe(*args, **kw)
        return await asyncio.to_thread(self.client.subscribe, *args, **kw)


MakeCaller = Callable[..., "contextlib.AbstractAsyncContextManager[Caller]"]


def caller_url(caller: Caller) -> str:
    return caller.client.url


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> MakeCaller:
    """Opens a Caller on a base URL with the parametrized client."""

    @contextlib.asynccontextmanager
    async def open_caller(url: str, **kw: Any) -> AsyncIterator[Caller]:
        kw.setdefault("timeout", DEADLINE)
        if request.param == "sync":
            with Client(url, **kw) as client:
                yield Caller(client)
        else:
            async with AsyncClient(url, **kw) as aclient:
                yield Caller(aclient)

    return open_caller


@contextlib.asynccontextmanager
async def gated(tmp_path: Path, connect: MakeCaller, **router: Any) -> AsyncIterator[Any]:
    """Serve ``Gated``; yields (caller, app id, gate file); the gate is opened on the way out."""
    gate = tmp_path / "gate"
    async with served(Gated, tmp_path / "data", **router) as app:
        try:
            async with connect(app.platform.url) as caller:
                yield caller, app.app_id, gate
        finally:
            gate.touch()


async def test_run_returns_the_reply(tmp_path: Path, connect: MakeCaller) -> None:
    """``run`` posts the arguments and returns the decoded reply; the app id may carry a path."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        assert await caller.run(app_id, {"prompt": "hi"}) == {"text": "echo: hi"}
        with pytest.raises(RequestFailed) as info:
            await caller.run(f"{app_id}/teapot", {"prompt": "tea"})
        assert (info.value.status, info.value.error_type) == (418, "teapot")
        assert info.value.detail == "no tea here" and info.value.request_id


async def test_run_of_an_unknown_app_raises(tmp_path: Path, connect: MakeCaller) -> None:
    """A run the router refuses raises ``RequestFailed`` with its status and error type."""
    async with gated(tmp_path, connect) as (caller, _, _):
        with pytest.raises(RequestFailed) as info:
            await caller.run("default/nope", {})
        assert info.value.status == 404 and info.value.error_type


async def test_submit_then_result(tmp_path: Path, connect: MakeCaller) -> None:
    """A submission's handle waits for the result; fal's routing options are accepted."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        handle = await caller.submit(
            app_id, {"prompt": "q"}, priority="low", hint="a", start_timeout=60, no_retry=True
        )
        assert len(handle.request_id) == 32
        assert await handle.result() == {"text": "echo: q"}
        status = await handle.status()
        assert isinstance(status, Completed) and status.logs is None
        assert status.error is None and "inference_time" in status.metrics


async def test_subscribe_submits_reports_and_returns_the_result(
    tmp_path: Path, connect: MakeCaller
) -> None:
    """``subscribe`` (fal-client's name): the request id once accepted, each status with logs,
    then the result; submit's options pass through, and a failure raises."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        enqueued: list[str] = []
        updates: list[Status] = []
        result = await caller.subscribe(
            app_id,
            {"prompt": "sub"},
            with_logs=True,
            on_enqueue=enqueued.append,
            on_queue_update=updates.append,
            priority="low",
        )
        assert result == {"text": "echo: sub"}
        assert len(enqueued) == 1 and len(enqueued[0]) == 32
        last = updates[-1]
        assert isinstance(last, Completed) and isinstance(last.logs, list)
        assert "generating for sub" in [entry["message"] for entry in last.logs]
        assert await caller.subscribe(app_id, {"prompt": "plain"}) == {"text": "echo: plain"}
        with pytest.raises(RequestFailed) as info:
            await caller.subscribe(app_id, {"prompt": "tea"}, path="teapot")
        assert info.value.status == 418


async def test_async_subscribe_awaits_coroutine_callbacks(tmp_path: Path) -> None:
    """``AsyncClient.subscribe`` awaits callbacks that are coroutine functions."""
    async with served(Gated, tmp_path / "data") as app, AsyncClient(app.platform.url) as client:
        seen: list[object] = []

        async def note(item: object) -> None:
            await asyncio.sleep(0)
            seen.append(item)

        result = await client.subscribe(
            app.app_id, {"prompt": "a"}, on_enqueue=note, on_queue_update=note
        )
        assert result == {"text": "echo: a"}
        assert isinstance(seen[0], str) and isinstance(seen[-1], Completed)


async def test_events_end_with_completed(tmp_path: Path, connect: MakeCaller) -> None:
    """``iter_events`` reads the status stream and ends with ``Completed``, logs included."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        handle = await caller.submit(app_id, {"prompt": "logged"})
        events = await handle.events(with_logs=True)
        *pending, last = events
        assert all(isinstance(e, Queued | InProgress) for e in pending)
        assert isinstance(last, Completed) and last.error is None
        assert isinstance(last.logs, list)
        assert "generating for logged" in [entry["message"] for entry in last.logs]


async def test_status_transitions(tmp_path: Path, connect: MakeCaller) -> None:
    """Queued behind a busy runner, then in progress, then completed."""
    async with gated(tmp_path, connect) as (caller, app_id, gate):
        first = await caller.submit(app_id, {"release": str(gate)}, path="hold")
        assert isinstance((await first.events(until=InProgress))[-1], InProgress)
        second = await caller.submit(app_id, {"prompt": "next"})
        assert await second.status() == Queued(position=0)
        assert isinstance(await first.status(with_logs=True), InProgress)
        gate.touch()
        assert await first.result() == {"text": "released"}
        assert await second.result() == {"text": "echo: next"}
        assert isinstance(await second.status(), Completed)


async def test_cancel_of_a_queued_request(tmp_path: Path, connect: MakeCaller) -> None:
    """A queued request cancelled: its result raises 499 client_cancelled; cancelling again is
    too late."""
    async with gated(tmp_path, connect) as (caller, app_id, gate):
        first = await caller.submit(app_id, {"release": str(gate)}, path="hold")
        await first.events(until=InProgress)
        second = await caller.submit(app_id, {"prompt": "never"})
        assert await second.cancel() == "CANCELLATION_REQUESTED"
        with pytest.raises(RequestFailed) as info:
            await second.result()
        assert (info.value.status, info.value.error_type) == (499, "client_cancelled")
        assert info.value.request_id == second.request_id
        status = await second.status()
        assert isinstance(status, Completed) and status.error_type == "client_cancelled"
        assert await second.cancel() == "ALREADY_COMPLETED"
        gate.touch()
        assert await first.result() == {"text": "released"}


async def test_failed_request_result_raises(tmp_path: Path, connect: MakeCaller) -> None:
    """A queued request that fails: ``Completed`` carries the error, ``result`` raises it."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        handle = await caller.submit(f"{app_id}/teapot", {"prompt": "coffee"})
        last = (await handle.events())[-1]
        assert isinstance(last, Completed)
        assert (last.error, last.error_type) == ("no coffee here", "teapot")
        with pytest.raises(RequestFailed) as info:
            await handle.result()
        assert (info.value.status, info.value.error_type) == (418, "teapot")
        assert info.value.detail == "no coffee here"


async def test_bad_routing_header_is_refused(tmp_path: Path, connect: MakeCaller) -> None:
    """A routing header the queue cannot read: the submission raises 422 naming it."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        with pytest.raises(RequestFailed) as info:
            await caller.submit(app_id, {}, headers={"x-fal-queue-priority": "urgent"})
        assert info.value.status == 422 and "x-fal-queue-priority" in info.value.detail


async def test_unknown_request_raises(tmp_path: Path, connect: MakeCaller) -> None:
    """Status and cancel of a request the router does not know raise 404."""
    async with gated(tmp_path, connect) as (caller, app_id, _):
        handle = Handle(caller.client.get_handle(app_id, "0" * 32))
        for call in (handle.status, handle.cancel):
            with pytest.raises(RequestFailed) as info:
                await call()
            assert info.value.status == 404


async def test_https_with_a_private_ca(tmp_path: Path, connect: MakeCaller) -> None:
    """Over https the client trusts the CA it is given, and refuses the server without it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with served(Gated, tmp_path / "data", tls_cert=cert_file, tls_key=key_file) as app:
        assert app.platform.url.startswith("https://")
        async with connect(app.platform.url, ssl_context=trusted) as caller:
            assert await caller.run(app.app_id, {"prompt": "tls"}) == {"text": "echo: tls"}
            handle = await caller.submit(app.app_id, {"prompt": "tls"})
            assert handle.handle.status_url.startswith("https://")
            assert await handle.result() == {"text": "echo: tls"}
        async with connect(app.platform.url) as untrusting:
            with pytest.raises(ConnectionFailed, match="SSL_CERT_FILE"):
                await untrusting.run(app.app_id, {"prompt": "tls"})


async def test_unreachable_router_raises(connect: MakeCaller) -> None:
    """Nothing listening: ``ConnectionFailed`` naming the URL, no library exception."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with connect(f"http://127.0.0.1:{port}") as caller:
        with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
            await caller.run("default/echo", {})


@contextlib.asynccontextmanager
async def fake_queue(honours_wait: bool) -> AsyncIterator[tuple[str, list[str]]]:
    """A queue that completes its one request once its status stream was read (fal's way,
    ``honours_wait`` False) or at the second held result request; yields (URL, calls seen)."""
    from aiohttp import web

    seen: list[str] = []
    state = {"done": False}
    request_id = "f" * 32

    async def submit(request: web.Request) -> web.Response:
        url = f"http://{request.host}/queue/o/a/requests/{request_id}"
        urls = {"response_url": url, "status_url": url + "/status", "cancel_url": url + "/cancel"}
        return web.json_response({"request_id": request_id, "queue_position": 0, **urls})

    async def stream(request: web.Request) -> web.Response:
        seen.append("stream")
        state["done"] = True
        event = b'data: {"status": "COMPLETED", "logs": null, "metrics": {}}\n\n'
        return web.Response(body=event, content_type="text/event-stream")

    async def result(request: web.Request) -> web.Response:
        wait = request.headers.get("prefer", "")
        seen.append(f"result {wait}".strip())
        if state["done"]:
            return web.json_response({"answer": 42})
        if not honours_wait:  # fal's answer while a request runs
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        state["done"] = True  # the next held request gets the result
        return web.json_response(
            {"detail": "not yet", "error_type": "request_in_progress"},
            status=400,
            headers={"x-yurt-error-type": "request_in_progress", "preference-applied": wait},
        )

    app = web.Application()
    app.router.add_post("/queue/o/a", submit)
    app.router.add_get(f"/queue/o/a/requests/{request_id}/status/stream", stream)
    app.router.add_get(f"/queue/o/a/requests/{request_id}", result)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_result_is_held_at_the_router_without_a_status_stream(connect: MakeCaller) -> None:
    """``result`` asks the router to hold the result request (``Prefer: wait``, up to the
    client's timeout) and asks again while the wait runs out; it opens no status stream."""
    async with fake_queue(honours_wait=True) as (url, seen), connect(url, timeout=30) as caller:
        handle = await caller.submit("o/a", {})
        assert await handle.result() == {"answer": 42}
    assert seen == ["result wait=30", "result wait=30"]


async def test_a_held_result_outlasts_a_short_client_timeout(
    tmp_path: Path, connect: MakeCaller
) -> None:
    """A client with a timeout under the shortest wait it can ask for (1 s) waits for a held
    result request by the wait beyond its timeout: the result still comes back."""
    async with gated(tmp_path, connect) as (caller, app_id, gate):
        submitted = await caller.submit(app_id, {"release": str(gate)}, path="hold")
        async with connect(caller_url(caller), timeout=0.9) as short:
            handle = Handle(short.client.get_handle(app_id, submitted.request_id))
            opener = asyncio.get_running_loop().call_later(2.0, gate.touch)
            try:
                assert await handle.result() == {"text": "released"}
            finally:
                opener.cancel()


async def test_result_follows_the_stream_where_the_wait_is_not_honoured(
    connect: MakeCaller,
) -> None:
    """On a server that ignores ``Prefer: wait`` (fal's queue), a 400 while the request runs is
    not taken for its result: the status stream is followed to completion, then the result read."""
    async with fake_queue(honours_wait=False) as (url, seen), connect(url) as caller:
        handle = await caller.submit("o/a", {})
        assert await handle.result() == {"answer": 42}
    assert seen[1:] == ["stream", "result"] and seen[0].startswith("result wait=")
