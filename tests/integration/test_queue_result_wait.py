"""``Prefer: wait=N`` on a queued request's result: held at the router until it completes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from yurt.router.fastlane import FrontProtocol
from yurt.router.fastlane_exchange import Stage

from queue_apps import Retries
from support import Served, served, wait_until

pytestmark = pytest.mark.timeout(180)


def only_watching(conn: FrontProtocol) -> bool:
    """The fast lane's connection is on a request that only waits (a held result): a hang-up
    cancels it."""
    return conn.serving is not None and conn.serving.stage is Stage.HELD


async def held(app: Served, sub: dict[str, Any], wait: str) -> tuple[int, Any, Any]:
    """GET the result with ``Prefer: wait=...``: (HTTP status, decoded JSON, headers)."""
    async with app.session.get(sub["response_url"], headers={"prefer": wait}) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def running(app: Served, tmp_path: Path, key: str) -> tuple[dict[str, Any], Path]:
    """A request that runs until its gate file exists, once IN_PROGRESS."""
    gate = tmp_path / f"gate-{key}"
    attempt = {"journal": str(tmp_path / "j"), "key": key, "gate": str(gate), "fail_times": 0}
    sub = await app.submit(json=attempt)

    async def started() -> bool:
        return (await app.status(sub))[1]["status"] == "IN_PROGRESS"

    await wait_until(started, what="the request to start")
    return sub, gate


async def test_a_result_request_is_held_until_the_request_completes(tmp_path: Path) -> None:
    """While the request runs the result request gets no answer; at completion it gets the
    result, saying which wait it applied."""
    async with served(Retries, tmp_path) as app:
        sub, gate = await running(app, tmp_path, "a")
        waiting = asyncio.create_task(held(app, sub, "wait=60"))
        # The request cannot complete before the gate opens: the result request must hang.
        done, _ = await asyncio.wait([waiting], timeout=0.5)
        assert not done
        gate.touch()
        status, body, headers = await waiting
        assert status == 200 and body["key"] == "a"
        assert headers["preference-applied"] == "wait=60"
        assert headers["x-fal-request-id"] == sub["request_id"]


async def test_a_held_result_request_answers_in_progress_when_its_wait_runs_out(
    tmp_path: Path,
) -> None:
    """Past N seconds the answer is the usual in-progress one; without Prefer it comes at once;
    a completed request answers at once, and a wait above 60 s is cut to 60."""
    async with served(Retries, tmp_path) as app:
        sub, gate = await running(app, tmp_path, "b")
        status, body, headers = await app.result(sub)
        assert (status, body["error_type"]) == (400, "request_in_progress")
        assert "preference-applied" not in headers
        t0 = time.monotonic()
        status, body, headers = await held(app, sub, 'respond-async, wait="1"; x=y')
        assert time.monotonic() - t0 >= 0.9
        assert (status, body["error_type"]) == (400, "request_in_progress")
        assert headers["preference-applied"] == "wait=1"
        assert headers["x-yurt-error-type"] == "request_in_progress"
        gate.touch()
        await app.completed(sub)
        status, body, headers = await held(app, sub, "wait=3600")
        assert status == 200 and body["key"] == "b"
        assert headers["preference-applied"] == "wait=60"


async def test_a_request_cancelled_while_its_result_is_held_answers_499(tmp_path: Path) -> None:
    """Cancelling the request ends the held result request with the cancellation."""
    async with served(Retries, tmp_path) as app:
        sub, gate = await running(app, tmp_path, "c")
        queued = await app.submit(json={"journal": str(tmp_path / "j"), "fail_times": 0})
        waiting = asyncio.create_task(held(app, queued, "wait=60"))
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done
        async with app.session.put(queued["cancel_url"]) as resp:
            assert resp.status == 202
        status, body, _ = await waiting
        assert (status, body["error_type"]) == (499, "client_cancelled")
        gate.touch()
        await app.completed(sub)


async def test_a_caller_hanging_up_leaves_the_others_waiting_on_the_request(
    tmp_path: Path,
) -> None:
    """Two callers hold the result of one request; the first hangs up (its wait is cancelled);
    the second still gets the result at completion."""
    async with served(Retries, tmp_path) as app:
        sub, gate = await running(app, tmp_path, "d")
        fast = app.platform.router._fast
        parts = urlsplit(sub["response_url"])
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(f"GET {parts.path} HTTP/1.1\r\nhost: x\r\nprefer: wait=60\r\n\r\n".encode())
        await writer.drain()
        await wait_until(
            lambda: any(only_watching(c) for c in fast), what="the first caller to wait"
        )
        first = next(c for c in fast if only_watching(c))
        assert first.worker is not None
        worker = first.worker
        second = asyncio.create_task(held(app, sub, "wait=60"))
        done, _ = await asyncio.wait([second], timeout=0.3)
        assert not done
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: worker.done(), what="the hung-up caller's wait to end")
        assert worker.cancelled()
        gate.touch()
        status, body, _ = await second
        assert status == 200 and body["key"] == "d"


async def test_a_stopping_router_answers_held_result_requests_without_asking_for_more(
    tmp_path: Path,
) -> None:
    """When the router stops, a held result request is answered at once with the in-progress
    reply, and without Preference-Applied: a client must not take it as a wait run out and ask
    again at once."""
    async with served(Retries, tmp_path) as app:
        sub, gate = await running(app, tmp_path, "e")
        waiting = asyncio.create_task(held(app, sub, "wait=60"))
        fast = app.platform.router._fast
        await wait_until(lambda: any(only_watching(c) for c in fast), what="the caller to wait")
        api = app.platform.router.queue_api
        assert api is not None
        api.close()
        status, body, headers = await waiting
        assert (status, body["error_type"]) == (400, "request_in_progress")
        assert "preference-applied" not in headers
        gate.touch()
