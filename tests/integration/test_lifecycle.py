"""Runner lifecycles on the local backend: setup failures, health, scaling, multiplexing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from apps import BlockingSetup, FailingSetup, FlakyHealth, Multiplexed, Quick, SlowSetup, Warm
from support import served, wait_until

pytestmark = pytest.mark.timeout(180)


async def test_setup_failure_terminates_runner_and_tells_caller(tmp_path: Path) -> None:
    """A setup() that raises ends the runner; the waiting caller gets 503 naming the error."""
    async with served(FailingSetup, tmp_path) as app:
        status, body, headers = await app.post(json={"prompt": "x"})
        assert status == 503
        assert body["error_type"] == "runner_scheduling_failure"
        assert "RuntimeError: weights not found at /models/missing.bin" in body["detail"]
        assert headers["x-fal-error-type"] == "runner_scheduling_failure"
        assert not app.healthy()


async def test_repeated_setup_failures_back_off(tmp_path: Path) -> None:
    """Each next start of a failing app waits one backoff step more (0.5 s, then 1 s)."""
    async with served(FailingSetup, tmp_path) as app:
        backend = app.platform.backend
        starts: dict[str, float] = {}
        seen_backoff = False

        async def observe() -> None:
            nonlocal seen_backoff
            while True:
                for r in backend.runners(app.app_id):
                    if r.state.value == "CRASH_BACKOFF":
                        seen_backoff = True
                    else:
                        starts.setdefault(r.runner_id, r.started_at)
                await asyncio.sleep(0.01)

        observer = asyncio.ensure_future(observe())
        try:
            for _ in range(3):  # each caller is told why, then the next one asks again
                status, body, _ = await app.post(json={"prompt": "x"})
                assert status == 503 and "weights not found" in body["detail"]
        finally:
            observer.cancel()
        first, second, third = sorted(starts.values())
        assert seen_backoff
        assert second - first >= 0.5
        assert third - second >= 1.0
        # With nobody asking, a failing app is not restarted for ever.
        await wait_until(lambda: backend.target(app.app_id) == 0, what="target back to 0")


@pytest.mark.parametrize(
    "cls", [SlowSetup, BlockingSetup], ids=["runner-deadline", "backend-deadline"]
)
async def test_setup_timeout_terminates_runner(tmp_path: Path, cls: type) -> None:
    """A setup() outliving startup_timeout ends the runner; the caller gets startup_timeout.

    SlowSetup awaits, so the runner's own deadline fires; BlockingSetup blocks the runner's
    loop, so only the backend's deadline (from spawn) can end it.
    """
    async with served(cls, tmp_path) as app:
        backend = app.platform.backend
        seen: set[str] = set()

        async def observe() -> None:
            while True:
                seen.update(r.runner_id for r in app.live_runners())
                await asyncio.sleep(0.01)

        observer = asyncio.ensure_future(observe())
        try:
            t0 = time.monotonic()
            status, body, _ = await app.post(json={"prompt": "x"})
        finally:
            observer.cancel()
        assert status == 503
        assert body["error_type"] == "startup_timeout"
        assert "startup_timeout=1s" in body["detail"]
        assert time.monotonic() - t0 < 30
        assert seen
        await wait_until(
            lambda: not seen & {r.runner_id for r in backend.runners(app.app_id)},
            what="the timed-out runner to be gone",
        )


async def test_failing_health_check_replaces_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user health check failing failure_threshold times in a row gets the runner replaced."""
    flag = tmp_path / "unhealthy"
    monkeypatch.setenv("YURT_TEST_UNHEALTHY", str(flag))
    async with served(FlakyHealth, tmp_path) as app:
        (first,) = await wait_until(app.healthy, what="a warm runner")
        flag.write_text("1")
        await wait_until(lambda: first not in app.healthy(), what="the unhealthy runner to leave")
        flag.unlink()
        (second,) = await wait_until(app.healthy, what="a replacement runner")
        assert second.runner_id != first.runner_id
        status, _, _ = await app.post(json={"prompt": "x"})
        assert status == 200


async def test_scale_from_zero_and_back(tmp_path: Path) -> None:
    """No runner until the first request; the runner stops keep_alive seconds after the last."""
    async with served(Quick, tmp_path) as app:
        await asyncio.sleep(0.3)  # give a wrongly eager scheduler the chance to start one
        assert app.platform.backend.runners(app.app_id) == []
        status, body, _ = await app.post(json={"prompt": "x"})
        assert status == 200
        assert len(app.live_runners()) == 1
        t_last = time.monotonic()
        await wait_until(lambda: not app.platform.backend.runners(app.app_id), what="scale to zero")
        assert time.monotonic() - t_last >= 0.9  # keep_alive=1
        assert app.platform.backend.target(app.app_id) == 0
        status, body2, _ = await app.post(json={"prompt": "y"})
        assert status == 200 and body2 != body  # a new runner process


async def test_min_concurrency_keeps_runners_warm(tmp_path: Path) -> None:
    """min_concurrency=1 starts a runner with no traffic and keeps it past keep_alive."""
    async with served(Warm, tmp_path) as app:
        (runner,) = await wait_until(app.healthy, what="a warm runner")
        await asyncio.sleep(1.0)  # five times keep_alive
        assert app.healthy() == [runner]
        assert app.platform.backend.target(app.app_id) == 1


async def test_max_multiplexing_never_exceeded(tmp_path: Path) -> None:
    """Twelve concurrent calls on a max_multiplexing=3 runner: never more than 3 inside it."""
    async with served(Multiplexed, tmp_path) as app:
        replies = await asyncio.gather(*(app.post(json={"seconds": 0.3}) for _ in range(12)))
        assert [r[0] for r in replies] == [200] * 12
        _, peak, _ = await app.post("/peak", json={})
        assert peak == {"text": "3"}  # the app counted 3 at once, no more
        (runner,) = app.healthy()
        shown = {"x-yurt-runner-token": runner.token}  # as the router calls it
        url = f"http://{runner.host}:{runner.port}/_yurt/info"
        async with app.session.get(url, headers=shown) as resp:
            info = await resp.json()
        assert info["peak_in_flight"] == 3
        assert info["max_multiplexing"] == 3


async def test_ready_runner_that_dies_is_replaced_at_once(tmp_path: Path) -> None:
    """A ready runner killed with no request in flight is replaced without any request."""
    async with served(Warm, tmp_path) as app:
        (first,) = await wait_until(app.healthy, what="a warm runner")
        (view,) = [r for r in app.platform.backend.runners(app.app_id) if r.pid]
        os.kill(view.pid, signal.SIGKILL)
        (second,) = await wait_until(
            lambda: [r for r in app.healthy() if r.runner_id != first.runner_id],
            what="a replacement runner",
        )
        assert second.runner_id != first.runner_id


async def test_idle_keep_alive_connection_does_not_hold_up_stop(tmp_path: Path) -> None:
    """An idle keep-alive connection on yurt's own routes closes at stop; the grace isn't waited."""
    async with served(Quick, tmp_path) as app:
        host, port = app.platform.router.config.host, app.platform.router.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /_yurt/health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        await app.platform.router.stop(grace=60.0)
        assert time.monotonic() - started < 30.0  # not the 60 s grace
        # read() returns only at EOF: the router closed the connection after the reply.
        rest = await asyncio.wait_for(reader.read(), 10.0)
        assert rest.endswith(b'{"status": "ok"}')
        writer.close()
