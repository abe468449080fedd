"""The queue column of the platform rules, through a real router, real runners and the queue."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from yurt.config import QueueConfig, WebhookConfig
from yurt.queue import attempt as attempt_module
from yurt.queue.model import Routing
from yurt.router.pool import ConnectionPool

from queue_apps import (
    Cancellable,
    Chatty,
    Hinted,
    Nested,
    NoServerErrorRetries,
    Retries,
    TwoRunners,
)
from support import Served, served, wait_until

pytestmark = pytest.mark.timeout(180)


def journal(path: Path, key: str = "k") -> list[str]:
    """The pids of the attempts made for ``key``, in order."""
    if not path.exists():
        return []
    return [pid for k, pid in (line.split() for line in path.read_text().splitlines()) if k == key]


async def gone(app: Served, runner_id: str) -> None:
    await wait_until(
        lambda: runner_id not in {r.runner_id for r in app.platform.backend.runners(app.app_id)},
        what=f"runner {runner_id} to be gone",
    )


async def occupy(app: Served, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """Submit a request that holds the only runner until the returned gate file exists."""
    gate = tmp_path / "gate"
    sub = await app.submit(json={"journal": str(tmp_path / "busy"), "gate": str(gate)})

    async def running() -> bool:
        return (await app.status(sub))[1]["status"] == "IN_PROGRESS"

    await wait_until(running, what="the occupying request to start")
    return sub, gate


async def test_2xx_completes_with_the_result(tmp_path: Path) -> None:
    """A 2xx completes the request: status 200 COMPLETED with metrics, result as answered."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "fail_times": 0})
        assert sub["queue_position"] == 0
        assert sub["status_url"] == sub["response_url"] + "/status"
        assert sub["cancel_url"] == sub["response_url"] + "/cancel"
        final = await app.completed(sub)
        assert "error" not in final and final["logs"] is None
        assert final["metrics"]["inference_time"] >= 0
        status, body, headers = await app.result(sub)
        assert status == 200 and body["attempt"] == 1
        assert headers["x-fal-request-id"] == sub["request_id"]
        assert len(journal(log)) == 1


@pytest.mark.parametrize("code", [400, 404, 418, 500, 502])
async def test_4xx_and_other_5xx_complete_with_the_error(tmp_path: Path, code: int) -> None:
    """4xx and 5xx other than 503/504 complete with the error, once, and the runner stays."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "status": code})
        final = await app.completed(sub)
        assert final["error"] == f"asked for {code}"
        status, body, _ = await app.result(sub)
        assert (status, body) == (code, {"detail": f"asked for {code}"})
        assert len(journal(log)) == 1
        sub = await app.submit(json={"journal": str(log), "key": "after", "fail_times": 0})
        await app.completed(sub)
        assert journal(log, "after") == journal(log)  # served by the same runner


async def test_422_from_validation_completes_not_retried(tmp_path: Path) -> None:
    """A body the endpoint's model refuses completes with 422 and pydantic's detail."""
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"status": "not a number"})
        final = await app.completed(sub)
        assert "journal" in final["error"]  # the missing field is named
        status, body, _ = await app.result(sub)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "journal"]


async def test_429_is_retried(tmp_path: Path) -> None:
    """429 from a runner sends the request back to the queue."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "status": 429, "fail_times": 1})
        await app.completed(sub)
        status, body, _ = await app.result(sub)
        assert status == 200 and body["attempt"] == 2


async def test_503_terminates_the_runner_and_retries(tmp_path: Path) -> None:
    """503 terminates the runner at once and the request completes on a new one."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "status": 503, "fail_times": 1})
        await app.completed(sub)
        status, body, _ = await app.result(sub)
        assert status == 200 and body["attempt"] == 2
        first, second = journal(log)
        assert first != second  # another runner (process)


async def test_504_retries_and_keeps_the_runner(tmp_path: Path) -> None:
    """504 is retried and the runner is kept (with one runner, the retry lands on it)."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "status": 504, "fail_times": 1})
        await app.completed(sub)
        assert (await app.result(sub))[0] == 200
        first, second = journal(log)
        assert first == second


async def test_crash_retries_on_a_new_runner(tmp_path: Path) -> None:
    """A runner dying mid-request is shut down and the request is retried on a new one."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "status": -1, "fail_times": 1})
        await app.completed(sub)
        status, body, _ = await app.result(sub)
        assert status == 200 and body["attempt"] == 2
        first, second = journal(log)
        assert first != second


async def test_request_timeout_retries_and_shuts_the_runner_down(tmp_path: Path) -> None:
    """An attempt outliving request_timeout stops its runner; the retry completes elsewhere."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(
            json={"journal": str(log), "status": 200, "fail_times": 1, "seconds": 30}
        )
        await app.completed(sub)
        status, body, _ = await app.result(sub)
        assert status == 200 and body["attempt"] == 2
        first, second = journal(log)
        assert first != second


async def test_attempts_are_bounded(tmp_path: Path) -> None:
    """A request failing every time gets max_attempts attempts, then completes with the error."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path, queue=QueueConfig(max_attempts=3)) as app:
        sub = await app.submit(json={"journal": str(log), "status": 504})
        final = await app.completed(sub)
        assert final["error"] == "asked for 504"
        assert (await app.result(sub))[0] == 504
        assert len(journal(log)) == 3


async def test_no_retry_header_turns_retries_off(tmp_path: Path) -> None:
    """x-fal-no-retry (or x-yurt-no-retry) makes the first outcome final."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        for n, header in enumerate(["x-fal-no-retry", "x-yurt-no-retry"]):
            key = f"k{n}"
            sub = await app.submit(
                json={"journal": str(log), "key": key, "status": 504}, headers={header: "1"}
            )
            await app.completed(sub)
            assert (await app.result(sub))[0] == 504
            assert len(journal(log, key)) == 1


async def test_skip_retry_conditions_turn_retries_off(tmp_path: Path) -> None:
    """An app with skip_retry_conditions=["server_error"] gets no retry after a 504."""
    log = tmp_path / "journal"
    async with served(NoServerErrorRetries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "status": 504})
        await app.completed(sub)
        assert (await app.result(sub))[0] == 504
        assert len(journal(log)) == 1


@pytest.mark.parametrize(("code", "header", "attempts"), [(500, "1", 2), (504, "0", 1)])
async def test_needs_retry_header_from_the_app_decides(
    tmp_path: Path, code: int, header: str, attempts: int
) -> None:
    """X-Fal-Needs-Retry forces a retry the table would not make, or prevents one it would."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(
            json={"journal": str(log), "status": code, "fail_times": 1, "needs_retry": header}
        )
        await app.completed(sub)
        assert len(journal(log)) == attempts


async def test_retry_prefers_another_runner(tmp_path: Path) -> None:
    """With two runners up, the retry after a 504 goes to the runner that did not fail."""
    log = tmp_path / "journal"
    async with served(TwoRunners, tmp_path) as app:
        await wait_until(lambda: len(app.healthy()) == 2, what="two runners")
        sub = await app.submit(json={"journal": str(log), "status": 504, "fail_times": 1})
        await app.completed(sub)
        first, second = journal(log)
        assert first != second


async def test_priority_orders_the_queue(tmp_path: Path) -> None:
    """Normal requests start before low ones, each priority first come first served."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        busy, gate = await occupy(app, tmp_path)
        subs = {}
        for key, priority in [("l1", "low"), ("n1", "normal"), ("l2", "low"), ("n2", None)]:
            headers = {"x-fal-queue-priority": priority} if priority else {}
            subs[key] = await app.submit(
                json={"journal": str(log), "key": key, "fail_times": 0}, headers=headers
            )
        positions = {k: (await app.status(s))[1]["queue_position"] for k, s in subs.items()}
        assert positions == {"n1": 0, "n2": 1, "l1": 2, "l2": 3}
        gate.touch()
        for sub in subs.values():
            await app.completed(sub)
        order = [line.split()[0] for line in log.read_text().splitlines()]
        assert order == ["n1", "n2", "l1", "l2"]
        await app.completed(busy)


async def test_start_deadline_expires_in_the_queue(tmp_path: Path) -> None:
    """X-Fal-Request-Timeout bounds the wait to start: 504 request_timeout of type user."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        busy, gate = await occupy(app, tmp_path)
        sub = await app.submit(
            json={"journal": str(log), "fail_times": 0}, headers={"X-Fal-Request-Timeout": "0.5"}
        )
        final = await app.completed(sub)
        assert final["error_type"] == "request_timeout"
        status, body, headers = await app.result(sub)
        assert status == 504 and body["error_type"] == "request_timeout"
        assert headers["x-fal-request-timeout-type"] == "user"
        gate.touch()
        await app.completed(busy)
        assert journal(log) == []  # it never ran


async def test_cancel_a_queued_request(tmp_path: Path) -> None:
    """Cancelling a queued request removes it: 499 client_cancelled, and it never runs."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        busy, gate = await occupy(app, tmp_path)
        sub = await app.submit(json={"journal": str(log), "fail_times": 0})
        async with app.session.put(sub["cancel_url"]) as resp:
            assert resp.status == 202
            assert await resp.json() == {"status": "CANCELLATION_REQUESTED"}
        final = await app.completed(sub)
        assert final["error_type"] == "client_cancelled"
        assert (await app.result(sub))[0] == 499
        async with app.session.put(sub["cancel_url"]) as resp:
            assert resp.status == 400
            assert await resp.json() == {"status": "ALREADY_COMPLETED"}
        unknown = sub["cancel_url"].replace(sub["request_id"], "0" * 32)
        async with app.session.put(unknown) as resp:
            assert resp.status == 404
            assert await resp.json() == {"status": "NOT_FOUND"}
        gate.touch()
        await app.completed(busy)
        assert journal(log) == []


async def test_cancel_an_in_progress_request(tmp_path: Path) -> None:
    """Cancelling a running request tells its runner, which cancels the async endpoint: 499."""
    log = tmp_path / "journal"
    async with served(Cancellable, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "gate": str(tmp_path / "never")})

        async def running() -> bool:
            return (await app.status(sub))[1]["status"] == "IN_PROGRESS" and bool(journal(log))

        await wait_until(running, what="the request to start")
        async with app.session.put(sub["cancel_url"]) as resp:
            assert resp.status == 202
        final = await app.completed(sub)
        assert final["error_type"] == "client_cancelled"
        status, body, _ = await app.result(sub)
        assert status == 499 and body["error_type"] == "client_cancelled"
        assert journal(log, "k-cancelled")  # the endpoint's task was cancelled


async def test_status_stream_ends_with_completed(tmp_path: Path) -> None:
    """The status stream sends each state as an SSE event and ends after COMPLETED."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        sub = await app.submit(json={"journal": str(log), "fail_times": 0})
        async with app.session.get(sub["status_url"] + "/stream") as resp:
            assert resp.headers["content-type"] == "text/event-stream"
            text = await resp.text()
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert '"COMPLETED"' in events[-1]
        assert all('"COMPLETED"' not in e for e in events[:-1])


@pytest.mark.parametrize(
    ("headers", "query", "field"),
    [
        ({"x-fal-queue-priority": "urgent"}, "", "x-fal-queue-priority"),
        ({"x-fal-request-timeout": "soon"}, "", "x-fal-request-timeout"),
        ({"x-yurt-request-timeout": "-1"}, "", "x-yurt-request-timeout"),
        ({"x-fal-no-retry": "maybe"}, "", "x-fal-no-retry"),
        ({}, "fal_webhook=ftp://x", "fal_webhook"),
    ],
)
async def test_bad_routing_options_are_422_naming_the_field(
    tmp_path: Path, headers: dict[str, str], query: str, field: str
) -> None:
    """A malformed routing header or webhook URL is refused with 422 naming it; nothing queued."""
    async with served(Retries, tmp_path) as app:
        url = f"{app.platform.url}/queue/{app.app_id}" + (f"?{query}" if query else "")
        async with app.session.post(url, json={}, headers=headers) as resp:
            assert resp.status == 422
            body = await resp.json()
            assert body["detail"][0]["loc"][1] == field
        assert app.platform.backend.target(app.app_id) == 0


async def test_unknown_app_request_and_oversized_body(tmp_path: Path) -> None:
    """Unknown apps and request ids get 404; an oversized submission gets 413."""
    async with served(Retries, tmp_path, max_body_size=1024) as app:
        base = f"{app.platform.url}/queue"
        async with app.session.post(f"{base}/default/nope", json={}) as resp:
            assert resp.status == 404
        async with app.session.get(f"{base}/{app.app_id}/requests/{'0' * 32}/status") as resp:
            assert resp.status == 404
            assert "x-fal-request-id" in resp.headers
        async with app.session.post(f"{base}/{app.app_id}", data=b"x" * 2048) as resp:
            assert resp.status == 413
        assert app.platform.backend.target(app.app_id) == 0


async def test_results_are_purged_after_the_retention(tmp_path: Path) -> None:
    """A completed request is kept for the retention period, then its status is 404."""
    queue = QueueConfig(retention=0.5, purge_interval=0.1)
    async with served(Retries, tmp_path, queue=queue) as app:
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "fail_times": 0})
        await app.completed(sub)

        async def purged() -> bool:
            return (await app.status(sub))[0] == 404

        await wait_until(purged, what="the result to be purged")
        assert (await app.result(sub))[0] == 404


async def test_urls_use_the_public_url_when_set(tmp_path: Path) -> None:
    """With public_url configured, the returned URLs are built on it, not on the Host header."""
    public = "https://yurt.example.com/prefix"
    async with served(Retries, tmp_path, public_url=public) as app:
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "fail_times": 0})
        assert sub["response_url"] == f"{public}/queue/{app.app_id}/requests/{sub['request_id']}"
        status_url = sub["status_url"].replace(public, app.platform.url)
        await app.completed({**sub, "status_url": status_url})


async def test_runner_hint_prefers_the_matching_runner(tmp_path: Path) -> None:
    """Requests hinted at one runner's hint all run there, even while the other is free."""
    log = tmp_path / "journal"
    async with served(Hinted, tmp_path) as app:
        route = app.platform.router.routes[app.app_id]
        await wait_until(
            lambda: len(route.slots) == 2 and all(s.hints for s in route.slots.values()),
            what="two runners with known hints",
        )
        # The runner dispatch would pick last, so that only the hint can send work there.
        (hint,) = list(route.slots.values())[-1].hints
        subs = [
            await app.submit(
                json={"journal": str(log), "key": f"k{n}", "fail_times": 0},
                headers={"X-Fal-Runner-Hint": hint},
            )
            for n in range(4)
        ]
        for sub in subs:
            await app.completed(sub)
        pids = {line.split()[1] for line in log.read_text().splitlines()}
        assert pids == {hint.removeprefix("pid-")}


@pytest.mark.parametrize("connection", ["idle", "new"])
async def test_logs_come_back_in_the_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connection: str
) -> None:
    """What an endpoint prints and logs while serving a request is in status?logs=1, whether
    the attempt went out on an idle connection to the runner or on a new one."""
    real_send = ConnectionPool.send
    sent: list[bool] = []

    def send(pool: ConnectionPool, *args: Any) -> Any:
        fut = real_send(pool, *args) if connection == "idle" else None
        sent.append(fut is not None)
        return fut

    monkeypatch.setattr(ConnectionPool, "send", send)
    async with served(Chatty, tmp_path) as app:
        # The first attempt opens the connection that later ones find idle.
        await app.completed(await app.submit(json={"journal": str(tmp_path / "j"), "key": "x"}))
        sent.clear()
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "key": "abc"})
        final = await app.completed(sub, logs=True)
        assert sent == [connection == "idle"]
        messages = {(e["level"], e["message"]) for e in final["logs"]}
        assert ("STDOUT", "printing for abc") in messages
        assert ("WARNING", "warning for abc") in messages
        assert all(e["source"] == "user" and e["timestamp"] for e in final["logs"])
        code, without = await app.status(sub)
        assert code == 200 and without["logs"] is None


@pytest.mark.parametrize(("code", "final"), [(418, 418), (503, 499)])
async def test_a_cancel_after_the_runner_answered_leaves_its_error_unless_it_stops_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, final: int
) -> None:
    """A cancel that arrives while a finished attempt's logs are fetched: the endpoint's own
    error (418) stands, as it answered before the cancel; a 503 would have been retried, so
    the cancel decides it (499)."""
    fetching, release = asyncio.Event(), asyncio.Event()
    real = attempt_module.fetch_logs

    async def held_fetch(*args: Any, **kw: Any) -> Any:
        fetching.set()
        await release.wait()
        return await real(*args, **kw)

    monkeypatch.setattr(attempt_module, "fetch_logs", held_fetch)
    async with served(Chatty, tmp_path) as app:
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "status": code})
        await asyncio.wait_for(fetching.wait(), 60)
        async with app.session.put(sub["cancel_url"]) as resp:
            assert resp.status == 202
        release.set()
        done = await app.completed(sub, logs=True)
        assert (await app.result(sub))[0] == final
        assert "printing for k" in {e["message"] for e in done["logs"]}


@pytest.mark.parametrize("code", [200, 500])
async def test_a_body_too_deep_to_decode_still_completes(tmp_path: Path, code: int) -> None:
    """A result nested too deep for json still completes the request and frees the runner."""
    queue = QueueConfig(webhooks=WebhookConfig(secret="s"), webhook_allow=("127.0.0.1",))
    async with served(Nested, tmp_path, queue=queue) as app:
        for _ in range(2):  # the second proves the runner's slot was given back
            sub = await app.submit(
                json={"journal": str(tmp_path / "j"), "status": code},
                query="fal_webhook=http://127.0.0.1:9/hook",
            )
            await app.completed(sub)
            async with app.session.get(sub["response_url"]) as resp:
                assert resp.status == code
                assert (await resp.read()).startswith(b"[[[")


async def test_status_streams_leave_no_waiters_behind(tmp_path: Path) -> None:
    """After streams of completed requests end, the queue holds no wake-up for them."""
    async with served(Retries, tmp_path) as app:
        for n in range(5):
            sub = await app.submit(
                json={"journal": str(tmp_path / "j"), "key": f"k{n}", "fail_times": 0}
            )
            async with app.session.get(sub["status_url"] + "/stream") as resp:
                assert '"COMPLETED"' in await resp.text()
        engine = app.platform.router.queue
        assert engine is not None and engine.table.watched == 0


async def test_a_retry_keeps_its_place_ahead_of_later_requests(tmp_path: Path) -> None:
    """With one runner, a request retried after a 504 runs again before those queued after it
    (once its backoff is over: none here)."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path, queue=QueueConfig(retry_backoff=0)) as app:
        busy, gate = await occupy(app, tmp_path)
        subs = [
            await app.submit(
                json={"journal": str(log), "key": "a", "status": 504, "fail_times": 1}
            ),
            await app.submit(json={"journal": str(log), "key": "b", "fail_times": 0}),
            await app.submit(json={"journal": str(log), "key": "c", "fail_times": 0}),
        ]
        gate.touch()
        for sub in subs:
            await app.completed(sub)
        order = [line.split()[0] for line in log.read_text().splitlines()]
        assert order == ["a", "a", "b", "c"]
        await app.completed(busy)


async def test_a_retry_on_a_kept_runner_backs_off_and_lets_others_run(tmp_path: Path) -> None:
    """After a 504 the request waits retry_backoff before its next attempt; the runner serves
    other requests meanwhile."""
    log = tmp_path / "journal"
    queue = QueueConfig(retry_backoff=3.0, retry_backoff_max=3.0)
    async with served(Retries, tmp_path, queue=queue) as app:
        first = {"journal": str(log), "key": "a", "status": 504, "fail_times": 1}
        retried = await app.submit(json=first)
        await wait_until(lambda: journal(log, "a"), what="the first attempt")
        failed_at = time.monotonic()
        other = await app.submit(json={"journal": str(log), "key": "b", "fail_times": 0})
        await app.completed(other)
        code, status = await app.status(retried)
        assert (code, status["status"]) == (202, "IN_QUEUE")  # backing off, not running
        final = await app.completed(retried)
        assert "error" not in final
        # A lower bound (load only adds to it), less the poll that saw the first attempt.
        assert time.monotonic() - failed_at >= 2.5
        assert [line.split()[0] for line in log.read_text().splitlines()] == ["a", "b", "a"]


async def test_a_request_with_a_free_runner_is_recorded_started_at_once(tmp_path: Path) -> None:
    """With a runner free and nothing queued, a submission is stored already started (one write
    before the call, not a queued row then a started one), unless a restart would not run it
    again (x-fal-no-retry): that one is stored queued, then started, as any other."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        await app.completed(await app.submit(json={"journal": str(log), "fail_times": 0}))
        store = app.platform.queue_store
        writes: list[str] = []
        store._db.set_trace_callback(writes.append)
        try:
            fast = await app.submit(json={"journal": str(log), "key": "f", "fail_times": 0})
            await app.completed(fast)
            slow = await app.submit(
                json={"journal": str(log), "key": "s", "fail_times": 0},
                headers={"x-fal-no-retry": "1"},
            )
            await app.completed(slow)
        finally:
            store._db.set_trace_callback(None)

        def shapes(request_id: str) -> list[str]:
            return [
                w.split(" (")[0].split(" SET ")[0] + (" started" if "started_at = " in w else "")
                for w in writes
                if request_id in w
            ]

        assert shapes(fast["request_id"]) == ["INSERT INTO requests", "UPDATE requests"]
        assert shapes(slow["request_id"]) == [
            "INSERT INTO requests",
            "UPDATE requests started",
            "UPDATE requests",
        ]
        assert journal(log, "f") and journal(log, "s")


async def test_a_submission_that_started_at_once_but_never_went_out_leaves_no_trace(
    tmp_path: Path,
) -> None:
    """A submission that took a free runner gives it back, and its record is withdrawn, if its
    wait for the commit ends in a cancellation; if the runner leaves during that wait, the
    request is queued instead, in the store too (not started, no attempt spent)."""
    log = tmp_path / "journal"
    async with served(Retries, tmp_path) as app:
        await app.completed(await app.submit(json={"journal": str(log), "fail_times": 0}))
        engine, route = app.platform.router.queue, app.platform.router.routes[app.app_id]
        assert engine is not None
        body = json.dumps({"journal": str(log), "fail_times": 0}).encode()

        def submission() -> asyncio.Task[Any]:
            return asyncio.create_task(engine.submit(route, "/", "", [], body, Routing()))

        known = set(engine.store._db.execute("SELECT id FROM requests"))
        cancelled = submission()
        await asyncio.sleep(0)  # one loop turn: the submission now waits for its commit
        assert sum(s.in_flight for s in route.slots.values()) == 1
        (withdrawn,) = set(engine.store._db.execute("SELECT id FROM requests")) - known
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert sum(s.in_flight for s in route.slots.values()) == 0
        engine.store.commit()
        assert engine.store.get(withdrawn[0]) is None  # never acknowledged: gone

        retired = submission()
        await asyncio.sleep(0)
        (slot,) = route.slots.values()
        route.retire(slot.runner_id)
        job = await retired
        assert (job.state.value, job.attempts, slot.in_flight) == ("IN_QUEUE", 0, 0)
        engine.store.commit()
        assert stored_row(engine.store, job.id) == ("IN_QUEUE", 0, None)
        route.reinstate(slot.runner_id)


def stored_row(store: Any, request_id: str) -> tuple[Any, ...]:
    row: tuple[Any, ...] = store._db.execute(
        "SELECT state, attempts, started_at FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    return row
