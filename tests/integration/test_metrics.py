"""``/_yurt/metrics`` of the router and of a runner, scraped over HTTP after real traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps import Rules
from queue_apps import Retries
from support import SampleKey, Served, sample_key, samples, served, wait_until

pytestmark = pytest.mark.timeout(180)


async def scrape(app: Served, base: str) -> dict[SampleKey, float]:
    # A runner's routes want its token (the router's, here the test's); the router's do not.
    shown = {} if base == app.platform.url else {"x-yurt-runner-token": runner_token(app)}
    async with app.session.get(base + "/_yurt/metrics", headers=shown) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        return samples(await resp.text())


def runner_base(app: Served) -> str:
    (view,) = [r for r in app.platform.backend.runners(app.app_id) if r.port]
    return f"http://127.0.0.1:{view.port}"


def runner_token(app: Served) -> str:
    (endpoint,) = app.healthy()
    return endpoint.token


async def test_router_and_runner_count_sync_and_queue_requests(tmp_path: Path) -> None:
    """Sync answers and queue completions by code, the retry, the wait and the runner's view."""
    async with served(Retries, tmp_path) as app:
        journal = str(tmp_path / "journal")
        ok, _, _ = await app.post(json={"journal": journal, "fail_times": 0})
        teapot, _, _ = await app.post(json={"journal": journal, "fail_times": -1, "status": 418})
        assert (ok, teapot) == (200, 418)
        # 504 is retried on the same runner: two attempts, one completion.
        attempt = {"journal": journal, "key": "q", "fail_times": 1, "status": 504}
        sub = await app.submit(json=attempt)
        assert (await app.completed(sub))["status"] == "COMPLETED"

        found = await scrape(app, app.platform.url)
        a = {"app": app.app_id}
        assert found[sample_key("yurt_requests_total", {**a, "kind": "sync", "code": "200"})] == 1
        assert found[sample_key("yurt_requests_total", {**a, "kind": "sync", "code": "418"})] == 1
        assert found[sample_key("yurt_requests_total", {**a, "kind": "queue", "code": "200"})] == 1
        assert not [k for k in found if k[0] == "yurt_requests_total" and ("code", "504") in k[1]]
        assert found[sample_key("yurt_queue_submitted_total", a)] == 1
        assert found[sample_key("yurt_queue_retries_total", a)] == 1
        assert found[sample_key("yurt_queue_wait_seconds_count", a)] == 1
        sync_count = sample_key("yurt_request_duration_seconds_count", {**a, "kind": "sync"})
        assert found[sync_count] == 2
        every = {**a, "kind": "sync", "le": "+Inf"}
        assert found[sample_key("yurt_request_duration_seconds_bucket", every)] == 2
        assert found[sample_key("yurt_runners", {**a, "state": "IDLE"})] == 1
        assert found[sample_key("yurt_runners", {**a, "state": "CRASH_BACKOFF"})] == 0
        assert found[sample_key("yurt_runners_target", a)] == 1
        assert found[sample_key("yurt_requests_in_flight", a)] == 0
        for status in ("IN_QUEUE", "IN_PROGRESS"):
            assert found[sample_key("yurt_queue_requests", {**a, "status": status})] == 0
        assert found[sample_key("process_resident_memory_bytes")] > 0

        runner = await scrape(app, runner_base(app))
        ep = {"endpoint": "/"}
        # The runner saw every attempt: the sync 200 and the queue's second, 418, and 504.
        assert runner[sample_key("yurt_runner_requests_total", {**ep, "code": "200"})] == 2
        assert runner[sample_key("yurt_runner_requests_total", {**ep, "code": "418"})] == 1
        assert runner[sample_key("yurt_runner_requests_total", {**ep, "code": "504"})] == 1
        assert runner[sample_key("yurt_runner_request_duration_seconds_count", ep)] == 4
        assert runner[sample_key("yurt_runner_state", {"state": "ready"})] == 1
        assert runner[sample_key("yurt_runner_state", {"state": "starting"})] == 0
        assert runner[sample_key("yurt_runner_setup_seconds")] >= 0
        assert runner[sample_key("yurt_runner_max_multiplexing")] == 1
        assert not [k for k in runner if k[0].startswith("yurt_gpu_")]  # a CPU app


async def test_a_terminated_runner_is_counted_by_its_rule(tmp_path: Path) -> None:
    """A 503 has the router stop the runner: counted under the rule's reason."""
    async with served(Rules, tmp_path) as app:
        status, _, _ = await app.post(json={"status": 503})
        assert status == 503
        key = sample_key(
            "yurt_runner_terminations_total", {"app": app.app_id, "reason": "runner_returned_503"}
        )

        async def counted() -> bool:
            return (await scrape(app, app.platform.url)).get(key) == 1

        await wait_until(counted, what="the termination to be counted")


async def test_openmetrics_when_the_scraper_asks(tmp_path: Path) -> None:
    """A scraper asking for OpenMetrics gets it, with its terminating ``# EOF``."""
    async with served(Rules, tmp_path) as app:
        assert (await app.post(json={"status": 200}))[0] == 200  # a runner to scrape
        accept = {"accept": "application/openmetrics-text; version=1.0.0"}
        for base in (app.platform.url, runner_base(app)):
            shown = {} if base == app.platform.url else {"x-yurt-runner-token": runner_token(app)}
            async with app.session.get(base + "/_yurt/metrics", headers=accept | shown) as resp:
                assert resp.status == 200
                assert resp.headers["content-type"].startswith("application/openmetrics-text")
                assert (await resp.text()).endswith("# EOF\n")
