"""The direct-request column of the platform rules, through a real router and real runners."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from apps import Echo, Rules
from faces import FACES
from support import served, wait_until

# Each through both faces: the fast lane, and aiohttp on a handed-over connection.
pytestmark = [pytest.mark.timeout(180), pytest.mark.parametrize("face", FACES)]


async def test_echo_round_trip_carries_request_ids(tmp_path: Path, face: str) -> None:
    """A sync call answers with the runner's reply and both request-id headers."""
    async with served(Echo, tmp_path, face=face) as app:
        status, body, headers = await app.post(json={"prompt": "hi"})
        assert (status, body) == (200, {"text": "echo: hi"})
        assert headers["x-fal-request-id"] == headers["x-yurt-request-id"]
        assert len(headers["x-fal-request-id"]) == 32


@pytest.mark.parametrize("status", [400, 404, 418, 429, 500, 502, 504])
async def test_statuses_returned_and_runner_kept(tmp_path: Path, face: str, status: int) -> None:
    """4xx, 504 and other 5xx are returned as they are and the runner stays."""
    async with served(Rules, tmp_path, face=face) as app:
        ok, first, _ = await app.post(json={"status": 200})
        assert ok == 200
        got, body, headers = await app.post(json={"status": status})
        assert got == status
        assert body == {"detail": f"asked for {status}"}
        assert "x-fal-request-id" in headers
        assert "x-fal-error-type" not in headers  # the app's error, not the router's
        again, second, _ = await app.post(json={"status": 200})
        assert again == 200 and second == first  # same runner pid


async def test_aiohttp_response_passes_through(tmp_path: Path, face: str) -> None:
    """An endpoint returning an aiohttp response sets its own status and body."""
    async with served(Rules, tmp_path, face=face) as app:
        status, body, _ = await app.post("/raw", json={"status": 201})
        assert status == 201 and "pid" in body


async def test_422_with_pydantic_detail(tmp_path: Path, face: str) -> None:
    """A body that fails validation gets 422 with pydantic's detail naming the field."""
    async with served(Rules, tmp_path, face=face) as app:
        status, body, _ = await app.post(json={"status": "not a number"})
        assert status == 422
        assert body["detail"][0]["loc"] == ["body", "status"]


async def test_unhandled_exception_is_500_with_detail(tmp_path: Path, face: str) -> None:
    """An exception in the endpoint becomes 500 with a JSON detail; the runner stays."""
    async with served(Rules, tmp_path, face=face) as app:
        status, body, _ = await app.post("/boom", json={})
        assert status == 500
        assert body == {"detail": "ValueError: the model exploded", "error_type": "endpoint_error"}
        assert len(app.healthy()) == 1


async def test_503_terminates_runner_and_is_returned(tmp_path: Path, face: str) -> None:
    """A 503 from the runner reaches the caller and that runner is terminated."""
    async with served(Rules, tmp_path, face=face) as app:
        _, first, _ = await app.post(json={"status": 200})
        (old,) = app.healthy()
        status, body, _ = await app.post(json={"status": 503})
        assert status == 503 and body == {"detail": "asked for 503"}
        await wait_until(
            lambda: (
                old.runner_id not in {r.runner_id for r in app.platform.backend.runners(app.app_id)}
            ),
            what="the runner that answered 503 to be gone",
        )
        _, second, _ = await app.post(json={"status": 200})
        assert second != first


async def test_crash_mid_request_is_503_runner_disconnected(tmp_path: Path, face: str) -> None:
    """A runner dying mid-request gives 503 runner_disconnected; a new runner takes over."""
    async with served(Rules, tmp_path, face=face) as app:
        _, first, _ = await app.post(json={"status": 200})
        (crashed,) = app.healthy()
        with structlog.testing.capture_logs() as logs:
            status, body, headers = await app.post("/crash", json={})
        assert status == 503
        assert body["error_type"] == "runner_disconnected"
        assert any(
            e["event"] == "runner_terminate_requested"
            and e["reason"] == "runner_disconnected"
            and e["runner"] == crashed.runner_id
            for e in logs
        )
        assert headers["x-fal-error-type"] == headers["x-yurt-error-type"] == "runner_disconnected"
        status, second, _ = await app.post(json={"status": 200})
        assert status == 200 and second != first


async def test_request_timeout_is_504_and_runner_stopped(tmp_path: Path, face: str) -> None:
    """A request outliving request_timeout gives 504 request_timeout and stops its runner."""
    async with served(Rules, tmp_path, face=face) as app:
        _, first, _ = await app.post(json={"status": 200})
        (old,) = app.healthy()
        status, body, headers = await app.post("/sleep", json={"seconds": 30})
        assert status == 504
        assert body["error_type"] == "request_timeout"
        assert headers["x-fal-error-type"] == "request_timeout"
        await wait_until(
            lambda: (
                old.runner_id not in {r.runner_id for r in app.platform.backend.runners(app.app_id)}
            ),
            what="the timed-out runner to be gone",
        )
        status, second, _ = await app.post(json={"status": 200})
        assert status == 200 and second != first


@pytest.mark.parametrize(
    ("path", "error_type"),
    [
        ("/default/nope", "app_not_found"),
        ("/other/echo", "app_not_found"),
        ("/default/echo/missing", "endpoint_not_found"),
        ("/", "not_found"),
    ],
)
async def test_unknown_app_or_path_is_404(
    tmp_path: Path, face: str, path: str, error_type: str
) -> None:
    """Unknown apps and endpoint paths get 404 from the router without starting a runner."""
    async with served(Echo, tmp_path, face=face) as app:
        async with app.session.post(app.platform.url + path, json={}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error_type"] == error_type
            assert resp.headers["x-fal-error-type"] == error_type
            assert "x-fal-request-id" in resp.headers
        assert app.platform.backend.target(app.app_id) == 0


async def test_oversized_body_is_413(tmp_path: Path, face: str) -> None:
    """A body over the configured limit gets 413, declared or chunked."""
    async with served(Echo, tmp_path, face=face, max_body_size=1024) as app:
        status, body, _ = await app.post(
            data=b"x" * 2048, headers={"content-type": "application/json"}
        )
        assert status == 413 and body["error_type"] == "request_too_large"

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(4):
                yield b"y" * 512

        status, body, _ = await app.post(data=chunks())
        assert status == 413
        status, body, _ = await app.post(json={"prompt": "small"})
        assert status == 200


async def test_start_timeout_header_bounds_the_wait_for_a_runner(tmp_path: Path, face: str) -> None:
    """X-Fal-Request-Timeout on a direct call: 504 request_timeout of type user when no runner
    frees up in time; a malformed value is 422."""
    async with served(Rules, tmp_path, face=face) as app:
        assert (await app.post(json={"status": 200}))[0] == 200
        route = app.platform.router.routes[app.app_id]
        busy = asyncio.ensure_future(app.post("/sleep", json={"seconds": 1.0}))
        await wait_until(lambda: any(s.in_flight for s in route.slots.values()), what="busy")
        status, body, headers = await app.post(
            json={"status": 200}, headers={"X-Fal-Request-Timeout": "0.2"}
        )
        assert status == 504 and body["error_type"] == "request_timeout"
        assert headers["x-fal-request-timeout-type"] == "user"
        assert (await busy)[0] == 200
        status, body, _ = await app.post(json={}, headers={"x-yurt-request-timeout": "soon"})
        assert status == 422 and body["detail"][0]["loc"] == ["header", "x-yurt-request-timeout"]
