"""A runner's requests: per-request context, cancellation, captured logs, hints, error headers."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from test_runner import in_flight, runner, status_of

from apps import Cancellable, Chatty, Hinted
from support import wait_until

pytestmark = pytest.mark.timeout(120)

Reply = tuple[int, Any, CIMultiDictProxy[str]]


async def ready(s: aiohttp.ClientSession, url: str) -> None:
    """Wait until the runner's health answers 200."""

    async def ok() -> bool:
        return await status_of(s, url + "/_yurt/health") == 200

    await wait_until(ok, what="runner ready")


async def call(
    s: aiohttp.ClientSession,
    url: str,
    json: Any = None,
    request_id: str = "",
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST and return (status, decoded JSON, headers)."""
    sent = dict(headers or {})
    if request_id:
        sent["x-fal-request-id"] = request_id
    async with s.post(url, json=json, headers=sent) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with s.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def logs_of(s: aiohttp.ClientSession, url: str, request_id: str) -> list[Any] | None:
    status, body = await get(s, f"{url}/_yurt/requests/{request_id}/logs")
    return body if status == 200 else None


def lines(entries: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(e["level"], e["message"]) for e in entries]


def assert_cancelled(reply: Reply, request_id: str) -> None:
    status, body, headers = reply
    assert status == 499
    assert body == {
        "detail": f"request {request_id} was cancelled",
        "error_type": "client_cancelled",
    }
    assert headers["x-fal-error-type"] == "client_cancelled"
    assert headers["x-yurt-error-type"] == "client_cancelled"


async def test_cancel_async_request_cancels_its_task_and_answers_499(tmp_path: Path) -> None:
    """POST /cancel with the id of an async request in flight cancels its task; it answers 499."""
    async with runner(Cancellable, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        waiting = asyncio.ensure_future(call(s, url + "/", {"seconds": 300}, "req-a"))
        await wait_until(lambda: in_flight(s, url), what="request in flight")
        status, body, _ = await call(s, url + "/cancel", request_id="req-a")
        assert (status, body) == (200, {"status": "CANCELLATION_REQUESTED", "request_id": "req-a"})
        assert_cancelled(await waiting, "req-a")
        _, report, _ = await call(s, url + "/cancelled")
        assert report["cancelled"] == ["task req-a"]
        # Cancelled and done: no longer in flight.
        assert (await call(s, url + "/cancel", request_id="req-a"))[0] == 404


async def test_cancel_sync_endpoint_polling_cancelled_answers_499(tmp_path: Path) -> None:
    """A sync endpoint sees current_request.cancelled turn true and stops; the reply is 499."""
    async with runner(Cancellable, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        waiting = asyncio.ensure_future(call(s, url + "/sync", {"seconds": 300}, "req-b"))
        await wait_until(lambda: in_flight(s, url), what="request in flight")
        status, body, _ = await call(s, url + "/sync/cancel", request_id="req-b")
        assert (status, body) == (200, {"status": "CANCELLATION_REQUESTED", "request_id": "req-b"})
        assert_cancelled(await waiting, "req-b")
        _, report, _ = await call(s, url + "/cancelled")
        assert report["cancelled"] == ["polled req-b"]


async def test_cancel_of_unknown_request_is_404(tmp_path: Path) -> None:
    """Cancelling an id not in flight is 404 not_found; a cancel without an id is 400."""
    async with runner(Cancellable, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        status, body, headers = await call(s, url + "/cancel", request_id="nobody")
        assert status == 404
        assert body["error_type"] == "not_found"
        assert "nobody" in body["detail"]
        assert headers["x-yurt-error-type"] == "not_found"
        status, body, _ = await call(s, url + "/cancel")
        assert (status, body["error_type"]) == (400, "bad_request")


async def test_cancel_is_served_while_every_slot_is_busy(tmp_path: Path) -> None:
    """With max_multiplexing reached, endpoints answer 429 but cancel requests still get in."""
    async with runner(Cancellable, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        waiting = asyncio.ensure_future(call(s, url + "/", {"seconds": 300}, "req-c"))
        await wait_until(lambda: in_flight(s, url), what="request in flight")
        assert (await call(s, url + "/", {"seconds": 0}, "req-d"))[0] == 429
        assert (await call(s, url + "/cancel", request_id="req-c"))[0] == 200
        assert_cancelled(await waiting, "req-c")
        assert (await call(s, url + "/", {"seconds": 0}, "req-e"))[0] == 200


async def test_current_request_in_async_sync_and_thread_code(tmp_path: Path) -> None:
    """current_request has id and headers in async, sync and to_thread code; None in setup()."""
    async with runner(Cancellable, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        headers = {"X-Test-Header": "hello"}
        _, body, _ = await call(s, url + "/context", None, "ctx-1", headers)
        assert body == {
            "request_id": "ctx-1",
            "header": "hello",
            "cancelled": False,
            "sync": "ctx-1",
        }
        _, body, _ = await call(s, url + "/sync-context", None, "ctx-2", headers)
        assert body == {"request_id": "ctx-2", "header": "hello"}
        _, body, _ = await call(s, url + "/sync-context", None, "", headers)
        assert body == {"request_id": "", "header": "hello"}
        _, report, _ = await call(s, url + "/cancelled")
        assert report["setup_saw"] == "None"


async def test_prints_and_log_records_are_captured_for_the_request(tmp_path: Path) -> None:
    """print() and logging (INFO and up) in an endpoint become the request's log entries."""
    async with runner(Chatty, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        status, _, headers = await call(s, url + "/", {"prompt": "one"}, "log-1")
        assert status == 200
        expected = [
            ("STDOUT", "stdout one"),
            ("STDERR", "stderr one"),
            ("INFO", "info one"),
            ("WARNING", "warning one"),
            ("STDOUT", "partial line one"),
        ]
        assert headers["x-yurt-log-count"] == str(len(expected))
        entries = await logs_of(s, url, "log-1")
        assert entries is not None
        assert lines(entries) == expected
        assert {e["source"] for e in entries} == {"user"}
        for e in entries:
            assert datetime.fromisoformat(e["timestamp"]).utcoffset() == UTC.utcoffset(None)
        # forget=1 hands them over once, then the request is unknown.
        status, forgotten = await get(s, f"{url}/_yurt/requests/log-1/logs?forget=1")
        assert (status, forgotten) == (200, entries)
        assert await logs_of(s, url, "log-1") is None
        assert await logs_of(s, url, "never-sent") is None


async def test_prints_still_reach_the_runner_output(tmp_path: Path) -> None:
    """Captured output is teed: it is still in the runner's own stdout/stderr, once."""
    async with runner(Chatty, tmp_path) as (proc, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        assert (await call(s, url + "/", {"prompt": "two"}, "log-2"))[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
        assert proc.stdout is not None
        output = (await proc.stdout.read()).decode()
    assert "setup output is not a request's" in output
    for line in ("stdout two", "stderr two", "partial line two", "warning two"):
        assert output.count(line) == 1, line


async def test_logs_are_readable_while_the_request_runs(tmp_path: Path) -> None:
    """GET /_yurt/requests/{id}/logs answers with what was captured so far, mid-request."""
    gate = tmp_path / "gate"
    async with runner(Chatty, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        waiting = asyncio.ensure_future(call(s, url + "/slow", {"gate": str(gate)}, "log-3"))

        async def first_printed() -> bool:
            entries = await logs_of(s, url, "log-3")
            return entries is not None and lines(entries) == [("STDOUT", "first")]

        await wait_until(first_printed, what="first line captured")
        assert not waiting.done()
        gate.touch()
        status, _, headers = await waiting
        assert (status, headers["x-yurt-log-count"]) == (200, "2")
        entries = await logs_of(s, url, "log-3")
        assert entries is not None
        assert lines(entries) == [("STDOUT", "first"), ("STDOUT", "last")]


async def test_concurrent_requests_keep_separate_logs(tmp_path: Path) -> None:
    """Requests served at the same time (max_multiplexing=3) each get only their own output."""
    async with runner(Chatty, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        # /together returns only once all three are inside it at once.
        replies = await asyncio.gather(
            *(call(s, url + "/together", {"prompt": f"c{i}"}, f"con-{i}") for i in range(3))
        )
        assert [r[0] for r in replies] == [200, 200, 200]
        for i in range(3):
            entries = await logs_of(s, url, f"con-{i}")
            assert entries is not None
            assert lines(entries) == [("STDOUT", f"before c{i}"), ("STDOUT", f"after c{i}")]


async def test_runner_hints_in_headers_and_info(tmp_path: Path) -> None:
    """provide_hints() is asked after setup and each request; valid hints go out in a header."""
    async with runner(Hinted, tmp_path) as (proc, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        _, info = await get(s, url + "/_yurt/info")
        assert info["hints"] == ["model-a", "served-0"]
        async with s.get(url + "/_yurt/health") as resp:
            assert resp.headers["x-yurt-runner-hints"] == "model-a,served-0"
        for n in (1, 2):
            status, _, headers = await call(s, url + "/", {"prompt": "x"})
            assert (status, headers["x-yurt-runner-hints"]) == (200, f"model-a,served-{n}")
        _, info = await get(s, url + "/_yurt/info")
        assert info["hints"] == ["model-a", "served-2"]
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
        assert proc.stdout is not None
        output = (await proc.stdout.read()).decode()
    # The comma-carrying hint is dropped, with one warning however many requests came.
    assert output.count("runner_hints_dropped") == 1


async def test_app_exception_headers_reach_the_caller(tmp_path: Path) -> None:
    """AppException(headers=...) sends those headers with the error reply."""
    async with runner(Hinted, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await ready(s, url)
        status, body, headers = await call(s, url + "/refuse")
        assert (status, body) == (503, {"detail": "busy elsewhere"})
        assert headers["X-Fal-Needs-Retry"] == "1"
        assert headers["x-yurt-runner-hints"] == "model-a,served-0"
