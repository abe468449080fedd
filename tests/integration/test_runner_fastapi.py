"""fal-style endpoints on a real runner process: FastAPI parameters, returns, exceptions,
streams, websockets, health, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastapi_apps import ExitHook, FastApiStyle, HealthByGet, ModelStyleExtras
from test_runner import _is, runner, status_of

from support import wait_until

pytestmark = pytest.mark.timeout(120)
# A websocket handshake's headers, for a plain client that reads the refusal's body.
UPGRADE = {
    "connection": "upgrade",
    "upgrade": "websocket",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@asynccontextmanager
async def ready(cls: type, tmp_path: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A runner of ``cls`` that finished setup, and a session to call it."""
    async with runner(cls, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: _is(status_of(s, url + "/_yurt/health"), 200), what="ready")
        yield s, url


async def post(
    s: aiohttp.ClientSession, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any, Any]:
    async with s.post(url, json=body, **kw) as resp:
        raw = await resp.read()
        try:
            decoded: Any = json.loads(raw)
        except ValueError:
            decoded = raw.decode()
        return resp.status, decoded, resp.headers


async def test_request_and_response_parameters(tmp_path: Path) -> None:
    """A body model beside Request and Response parameters; a header set on Response is sent."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        status, body, headers = await post(s, url + "/", {"prompt": "hi", "steps": 3})
        assert (status, body) == (200, {"text": "hi (True)"})
        assert headers["x-fal-billable-units"] == "3"


async def test_several_bodies_dict_and_plain_types(tmp_path: Path) -> None:
    """Two body models embed by name; a dict takes the whole body; a plain type is a query."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        two = {"prompt": {"prompt": "p"}, "style": {"name": "bold"}}
        assert (await post(s, url + "/two", two))[:2] == (200, {"text": "bold: p"})
        assert (await post(s, url + "/dict", {"b": 1, "a": 2}))[:2] == (200, {"keys": ["a", "b"]})
        assert (await post(s, url + "/plain?n=4"))[:2] == (200, {"twice": 8})


async def test_starlette_responses_are_sent_as_returned(tmp_path: Path) -> None:
    """A returned Response or JSONResponse keeps its status, headers and media type."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        status, body, headers = await post(s, url + "/response", {"prompt": "loud"})
        assert (status, body, headers["x-made-by"]) == (200, "LOUD", "app")
        assert headers["content-type"].startswith("text/plain")
        assert (await post(s, url + "/json-response", {"q": 1}))[:2] == (201, {"seen": {"q": 1}})


async def test_exceptions_keep_their_status_and_shape(tmp_path: Path) -> None:
    """HTTPException keeps status and detail; FieldException is a 422 in FastAPI's shape;
    a CUDA out-of-memory error is a 503; a bad body is FastAPI's 422 without the input."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        assert (await post(s, url + "/http-exception", {"prompt": "tea"}))[:2] == (
            418,
            {"detail": {"why": "tea"}},
        )
        status, body, headers = await post(s, url + "/field", {"prompt": "x"})
        assert status == 422
        assert body == {
            "detail": [{"loc": ["body", "prompt"], "msg": "too dull", "type": "value_error"}]
        }
        assert headers["x-fal-billable-units"] == "1"
        assert (await post(s, url + "/oom", {"prompt": "x"}))[:2] == (
            503,
            {"detail": "CUDA error: out of memory"},
        )
        status, body, _ = await post(s, url + "/", {"prompt": 5, "secret": "s3cr3t"})
        assert status == 422
        assert body["detail"] == [
            {
                "loc": ["body", "prompt"],
                "msg": "Input should be a valid string",
                "type": "string_type",
            }
        ]
        assert "s3cr3t" not in json.dumps(body) and "5" not in json.dumps(body["detail"])


async def test_model_style_endpoints_answer_fal_exceptions_too(tmp_path: Path) -> None:
    """On the byte path: FieldException's 422, a GPU exception's 503, HTTPException's status,
    detail and headers, and a returned starlette Response."""
    async with ready(ModelStyleExtras, tmp_path) as (s, url):
        status, body, _ = await post(s, url + "/field", {"prompt": "x"})
        assert (status, body["detail"][0]["loc"]) == (422, ["body", "prompt"])
        status, _, headers = await post(s, url + "/field", {"prompt": 1})  # fails validation
        assert (status, headers["x-fal-billable-units"]) == (422, "0")
        assert (await post(s, url + "/gpu", {"prompt": "x"}))[:2] == (
            503,
            {"detail": "CUDA error: out of memory"},
        )
        status, body, headers = await post(s, url + "/http-exception", {"prompt": "x"})
        assert (status, body, headers["x-why"]) == (409, {"detail": "taken"}, "taken")
        status, body, headers = await post(s, url + "/starlette", {"prompt": "plain"})
        assert (status, body) == (202, "plain")


async def test_current_request_names_the_endpoint(tmp_path: Path) -> None:
    """self.current_request inside a FastAPI-style endpoint has its path and request id, and
    what it prints is captured as the request's logs."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        status, body, headers = await post(s, url + "/context", headers={"x-fal-request-id": "r-1"})
        assert (status, body) == (200, {"endpoint": "/context", "request_id": "r-1"})
        assert headers["x-yurt-log-count"] == "1"


async def test_stream_reaches_the_caller_event_by_event(tmp_path: Path) -> None:
    """A StreamingResponse's first event arrives before the second is produced."""
    gate = tmp_path / "gate"
    async with (
        ready(FastApiStyle, tmp_path) as (s, url),
        s.post(url + "/gate", params={"path": str(gate)}) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 30)
        assert first == b"data: first\n\n"
        gate.write_text("open")
        assert await resp.content.read() == b"data: second\n\n"


async def test_async_generator_streams_server_sent_events(tmp_path: Path) -> None:
    """A model-style endpoint returning an async generator streams each item as an SSE event."""
    async with (
        ready(ModelStyleExtras, tmp_path) as (s, url),
        s.post(url + "/events", json={"count": 3}) as resp,
    ):
        assert resp.headers["content-type"] == "text/event-stream"
        text = (await resp.read()).decode()
    assert [json.loads(line[6:]) for line in text.split("\n\n") if line] == [
        {"text": "0"},
        {"text": "1"},
        {"text": "2"},
    ]


async def test_sync_generator_streams_text_events(tmp_path: Path) -> None:
    """A sync generator's strings are sent as SSE data lines, one event each."""
    async with (
        ready(ModelStyleExtras, tmp_path) as (s, url),
        s.post(url + "/sync-events", json={"count": 2}) as resp,
    ):
        assert await resp.read() == b"data: line 0\n\ndata: line 1\n\n"


async def test_hanging_up_closes_an_async_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the byte path too, a caller hanging up mid-stream closes the endpoint's generator."""
    monkeypatch.setenv("YURT_TEST_STREAM_MARKER", str(tmp_path / "gen"))
    async with ready(ModelStyleExtras, tmp_path) as (s, url):
        resp = await s.post(url + "/slow-events", json={"count": 100000, "gap": 0.05})
        await resp.content.readuntil(b"\n\n")
        resp.close()
        await wait_until((tmp_path / "gen.closed").exists, what="generator closed")


async def test_hanging_up_stops_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller closing its connection mid-stream closes the endpoint's generator."""
    marker = tmp_path / "progress"
    monkeypatch.setenv("YURT_TEST_STREAM_MARKER", str(marker))
    async with ready(FastApiStyle, tmp_path) as (s, url):
        resp = await s.post(url + "/stream", json={"count": 100000, "gap": 0.05})
        await resp.content.readuntil(b"\n\n")
        resp.close()  # drops the connection
        closed = Path(str(marker) + ".closed")
        await wait_until(closed.exists, what="generator closed")
        progress = int(marker.read_text())
        assert progress < 100000 - 1


async def test_websocket_echo_and_close_code(tmp_path: Path) -> None:
    """A websocket endpoint echoes messages and its close code reaches the client."""
    async with ready(FastApiStyle, tmp_path) as (s, url), s.ws_connect(url + "/echo") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str() == "echo: hello"
        await ws.send_str("bye")
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert (ws.close_code, message.extra) == (4000, "bye")


async def test_websocket_closed_before_accept_is_refused(tmp_path: Path) -> None:
    """An endpoint that closes before accepting refuses the upgrade with 403; a plain GET
    on a websocket path is a JSON 400, and a POST a 405 allowing GET."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(url + "/refuse")
        assert info.value.status == 403
        async with s.get(url + "/refuse", headers=UPGRADE) as resp:
            assert (resp.status, (await resp.json())["error_type"]) == (403, "websocket_refused")
        async with s.get(url + "/echo") as resp:
            assert resp.status == 400
            assert (await resp.json())["error_type"] == "bad_request"
        async with s.post(url + "/echo") as resp:
            assert (resp.status, resp.headers["allow"]) == (405, "GET")


async def test_websocket_sessions_count_toward_multiplexing(tmp_path: Path) -> None:
    """Open sessions hold request slots: past max_multiplexing an upgrade gets 429, and a
    closed session frees its slot."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        first = await s.ws_connect(url + "/echo")
        second = await s.ws_connect(url + "/echo")
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(url + "/echo")
        assert info.value.status == 429
        await first.close()
        await wait_until(lambda: _in_flight(s, url, 1), what="slot freed")
        third = await s.ws_connect(url + "/echo")
        await third.send_str("x")
        assert await third.receive_str() == "echo: x"
        await asyncio.gather(second.close(), third.close())


async def _in_flight(s: aiohttp.ClientSession, url: str, count: int) -> bool:
    async with s.get(url + "/_yurt/info") as resp:
        return bool((await resp.json())["in_flight"] == count)


async def test_health_check_by_get_and_fal_health_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HealthCheck(method="GET") serves the endpoint on GET and the runner's health runs it;
    GET /health answers as fal's runners do."""
    async with ready(HealthByGet, tmp_path) as (s, url):
        async with s.get(url + "/ping") as resp:
            assert (resp.status, await resp.json()) == (200, {"method": "GET"})
        async with s.get(url + "/health") as resp:
            assert (resp.status, await resp.json()) == (200, {"version": "unknown"})
    monkeypatch.setenv("YURT_TEST_UNHEALTHY", "1")
    async with runner(HealthByGet, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: _is(status_of(s, url + "/health"), 200), what="setup done")
        async with s.get(url + "/_yurt/health") as resp:
            assert resp.status == 503
            assert "sick" in (await resp.json())["detail"]


async def test_runner_serves_its_openapi_document(tmp_path: Path) -> None:
    """GET /openapi.json describes every endpoint, websockets included."""
    async with ready(FastApiStyle, tmp_path) as (s, url), s.get(url + "/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {"/", "/two", "/stream", "/echo"}
    assert "x-fal-protocol" in doc["paths"]["/echo"]
    assert doc["components"]["schemas"]["Prompt"]["properties"]["prompt"]["examples"] == [
        "a yurt at dawn"
    ]


async def test_version_and_handle_exit_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /health reports the App's version; SIGTERM calls handle_exit before the drain."""
    marker = tmp_path / "exit"
    monkeypatch.setenv("YURT_TEST_EXIT_MARKER", str(marker))
    async with runner(ExitHook, tmp_path) as (proc, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: _is(status_of(s, url + "/health"), 200), what="ready")
        async with s.get(url + "/health") as resp:
            assert await resp.json() == {"version": "7"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert marker.read_text() == "told"


@pytest.mark.parametrize("cls", [FastApiStyle, ModelStyleExtras])
async def test_unhandled_errors_leave_their_traceback_in_the_log(cls: type, tmp_path: Path) -> None:
    """An unhandled error answered 503 as a GPU failure is logged with its traceback, on
    either path."""
    async with runner(cls, tmp_path) as (proc, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: _is(status_of(s, url + "/_yurt/health"), 200), what="ready")
        assert (await post(s, url + "/oom", {"prompt": "x"}))[0] == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        output = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
    assert "endpoint_failed" in output
    assert "RuntimeError: CUDA out of memory" in output
    assert "fastapi_apps.py" in output


async def test_cancel_reaches_a_fastapi_style_endpoint(tmp_path: Path) -> None:
    """POST {path}/cancel with the request's id cancels an async FastAPI-style endpoint in
    flight: it answers 499 and frees its slot."""
    async with ready(FastApiStyle, tmp_path) as (s, url):
        headers = {"x-fal-request-id": "req-f"}
        waiting = asyncio.ensure_future(post(s, url + "/wait", headers=headers))
        await wait_until(lambda: _in_flight(s, url, 1), what="request in flight")
        status, body, _ = await post(s, url + "/wait/cancel", headers=headers)
        assert (status, body["status"]) == (200, "CANCELLATION_REQUESTED")
        status, body, _ = await asyncio.wait_for(waiting, 30)
        assert (status, body["error_type"]) == (499, "client_cancelled")
        await wait_until(lambda: _in_flight(s, url, 0), what="slot freed")


async def test_background_tasks_run_after_the_reply(tmp_path: Path) -> None:
    """A FastAPI BackgroundTasks task runs after the reply went out: the caller does not wait."""
    gate = tmp_path / "gate"
    async with ready(FastApiStyle, tmp_path) as (s, url):
        status, body, _ = await post(s, url + f"/background?path={gate}")
        assert (status, body) == (200, {"queued": True})
        assert not (tmp_path / "gate.done").exists()
        gate.write_text("open")
        await wait_until((tmp_path / "gate.done").exists, what="background task done")


async def test_a_stream_cut_short_is_not_a_whole_one(tmp_path: Path) -> None:
    """A generator raising mid-stream ends the connection without the stream's last chunk: the
    caller sees an incomplete reply, never a second reply after the first."""
    async with (
        ready(ModelStyleExtras, tmp_path) as (s, url),
        s.post(url + "/broken-events", json={}) as resp,
    ):
        assert resp.status == 200
        assert await resp.content.readuntil(b"\n\n") == b'data: {"text":"0"}\n\n'
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.content.read()
