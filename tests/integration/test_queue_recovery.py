"""The queue across restarts and failures: what a new router finds, and what it refuses."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from yurt.config import QueueConfig
from yurt.errors import ConfigError
from yurt.platform import Platform
from yurt.queue import attempt as attempt_module
from yurt.queue import engine as engine_module
from yurt.queue.backlog import AppBacklog
from yurt.queue.decide import Unsent
from yurt.queue.engine import QueueEngine
from yurt.queue.model import Job, Routing
from yurt.router.dispatch import Slot
from yurt.router.pool import ConnectionPool

from queue_apps import NeverReady, Relogged, Retries, Stubborn, TwoRunners
from support import Served, fast_config, served, wait_until

pytestmark = pytest.mark.timeout(180)


async def test_cancel_in_progress_is_kept_across_a_restart(tmp_path: Path) -> None:
    """A request cancelled while running, cut short by a stop, completes 499 after restart."""
    data = tmp_path / "data"
    async with served(Stubborn, data) as app:
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "gate": str(tmp_path / "no")})

        async def running() -> bool:
            return (await app.status(sub))[1]["status"] == "IN_PROGRESS"

        await wait_until(running, what="the request to start")
        async with app.session.put(sub["cancel_url"]) as resp:
            assert resp.status == 202
        # The endpoint never looks at the cancellation: the stop cuts the attempt short.
    async with served(Stubborn, data) as app:
        # The new router listens on another port: the same paths, on its base URL.
        path = urlsplit(sub["status_url"]).path
        final = await app.completed({**sub, "status_url": app.platform.url + path})
        assert final["error_type"] == "client_cancelled"


async def test_a_no_retry_request_cut_short_by_a_stop_is_not_run_again(tmp_path: Path) -> None:
    """x-fal-no-retry holds across a restart: the cut-short attempt completes 503, not again."""
    data, journal = tmp_path / "data", tmp_path / "j"
    async with served(Stubborn, data) as app:
        body = {"journal": str(journal), "gate": str(tmp_path / "no")}
        sub = await app.submit(json=body, headers={"x-fal-no-retry": "1"})

        async def running() -> bool:
            return (await app.status(sub))[1]["status"] == "IN_PROGRESS"

        await wait_until(running, what="the request to start")
    async with served(Stubborn, data) as app:
        path = urlsplit(sub["status_url"]).path
        final = await app.completed({**sub, "status_url": app.platform.url + path})
        assert final["error_type"] == "runner_disconnected"
        assert "not retried" in final["error"]
    assert len(journal.read_text().splitlines()) == 1  # one attempt, before the stop


async def test_queued_requests_fail_when_runners_never_start(tmp_path: Path) -> None:
    """After max_start_failures failed starts with no runner up, waiting requests get 503."""
    queue = QueueConfig(max_start_failures=2)
    async with served(NeverReady, tmp_path, queue=queue) as app:
        subs = [await app.submit(json={"journal": "x", "key": str(n)}) for n in range(2)]
        for sub in subs:
            final = await app.completed(sub)
            assert final["error_type"] == "runner_scheduling_failure"
            assert "weights not found" in final["error"]
        # Nobody waits any more: the failing app goes back to no runners.
        await wait_until(
            lambda: app.platform.backend.target(app.app_id) == 0, what="target back to 0"
        )


async def test_requests_of_an_app_not_served_are_reported_not_run(tmp_path: Path) -> None:
    """A request left for another app answers 503 app_not_served, and can still be cancelled."""
    async with served(Retries, tmp_path) as app:
        store = app.platform.queue_store
        orphan = Job("f" * 32, "default/other", "/", "", [], b"{}", Routing(), created_at=1.0)
        store.add(orphan)
        base = f"{app.platform.url}/queue/default/other/requests/{orphan.id}"
        async with app.session.get(base + "/status") as resp:
            assert resp.status == 503
            assert (await resp.json())["error_type"] == "app_not_served"
        async with app.session.put(base + "/cancel") as resp:
            assert (resp.status, await resp.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        async with app.session.get(base) as resp:
            assert resp.status == 499


async def test_queue_full_is_429(tmp_path: Path) -> None:
    """Past max_queued waiting requests, a submission gets 429 queue_full."""
    async with served(Retries, tmp_path, queue=QueueConfig(max_queued=1)) as app:
        gate = tmp_path / "gate"
        first = await app.submit(json={"journal": str(tmp_path / "j"), "gate": str(gate)})

        async def running() -> bool:
            return (await app.status(first))[1]["status"] == "IN_PROGRESS"

        await wait_until(running, what="the first request to start")
        await app.submit(json={"journal": str(tmp_path / "j"), "fail_times": 0})
        async with app.session.post(
            f"{app.platform.url}/queue/{app.app_id}", json={"journal": "x"}
        ) as resp:
            assert resp.status == 429
            assert (await resp.json())["error_type"] == "queue_full"
        gate.touch()


async def test_one_data_dir_serves_one_router(tmp_path: Path) -> None:
    """A second platform on a data dir in use fails at start, naming the fix."""
    async with served(Retries, tmp_path):
        second = Platform(fast_config(tmp_path))
        with pytest.raises(ConfigError, match="--data-dir"):
            await second.start()


async def test_a_store_that_fails_refuses_submissions_and_answers_errors(tmp_path: Path) -> None:
    """With the store failing, a submission gets 503 queue_unavailable (not accepted) and a
    status read gets 500 rather than a hanging connection."""
    async with served(Retries, tmp_path) as app:
        store = app.platform.queue_store
        # As a broken disk would: every statement now raises (the real one closes at the stop).
        real, broken = store._db, sqlite3.connect(":memory:")
        broken.close()
        store._db = broken
        try:
            url = f"{app.platform.url}/queue/{app.app_id}"
            async with app.session.post(url, json={"journal": "x"}) as resp:
                assert resp.status == 503
                assert (await resp.json())["error_type"] == "queue_unavailable"
            async with app.session.get(f"{url}/requests/{'a' * 32}/status") as resp:
                assert resp.status == 500
                assert (await resp.json())["error_type"] == "internal_error"
        finally:
            store._db = real


async def test_bodies_past_the_byte_budget_are_429(tmp_path: Path) -> None:
    """Past max_queued_bytes of unfinished bodies, a submission gets 429 queue_full."""
    async with served(Retries, tmp_path, queue=QueueConfig(max_queued_bytes=200)) as app:
        url = f"{app.platform.url}/queue/{app.app_id}"
        async with app.session.post(url, json={"journal": "x" * 300}) as resp:
            assert resp.status == 429
            assert (await resp.json())["error_type"] == "queue_full"
        sub = await app.submit(json={"journal": str(tmp_path / "j"), "fail_times": 0})
        await app.completed(sub)


async def test_stopping_ends_status_streams_and_starts_nothing_queued(tmp_path: Path) -> None:
    """On stop, open status streams are cut (not completed), the attempt in flight finishes,
    and nothing queued starts."""
    log = tmp_path / "journal"
    gate = tmp_path / "gate"
    platform = Platform(fast_config(tmp_path / "data"))
    (app_id,) = await platform.start(Retries)
    stopping = None
    try:
        async with aiohttp.ClientSession() as session:
            base = f"{platform.url}/queue/{app_id}"
            async with session.post(base, json={"journal": str(log), "gate": str(gate)}) as r:
                first = await r.json()
            async with session.post(base, json={"journal": str(log), "key": "later"}) as r:
                assert r.status == 200
            await wait_until(lambda: journal_keys(log) == ["k"], what="the first to start")
            parts = urlsplit(first["status_url"])
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(f"GET {parts.path}/stream HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"IN_PROGRESS"), 30)
            assert head.startswith(b"HTTP/1.1 200")
            stopping = asyncio.ensure_future(platform.stop(grace=60))
            rest = await asyncio.wait_for(reader.read(), 30)  # to EOF: the stream is cut
            writer.close()
            assert not rest.endswith(b"0\r\n\r\n")  # no terminating chunk: cut, not complete
            gate.touch()
            await asyncio.wait_for(stopping, 60)
        assert journal_keys(log) == ["k"]  # "later" never started
    finally:
        if stopping is None:
            await platform.stop()


def journal_keys(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


async def test_earlier_attempts_logs_survive_a_restart(tmp_path: Path) -> None:
    """What an attempt before a restart logged is in the final logs of the request."""
    data, journal, gate = tmp_path / "data", tmp_path / "j", tmp_path / "gate"
    async with served(Relogged, data) as app:
        sub = await app.submit(json={"journal": str(journal), "gate": str(gate)})
        # The first attempt answered 504; the second waits for the gate when the router stops.
        await wait_until(
            lambda: journal.exists() and len(journal.read_text().splitlines()) == 2,
            what="the second attempt",
        )
    gate.touch()
    async with served(Relogged, data) as app:
        path = urlsplit(sub["status_url"]).path
        final = await app.completed({**sub, "status_url": app.platform.url + path}, logs=True)
        assert "error" not in final
        messages = [entry["message"] for entry in final["logs"]]
        assert "attempt 1" in messages and "attempt 3" in messages


@pytest.mark.parametrize("connection", ["idle", "new"])
async def test_the_store_says_started_before_the_runner_hears_of_a_queued_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connection: str
) -> None:
    """A queued request that starts is committed as started (attempt 1) before its attempt is
    sent: were the router killed in between, a restart must count that attempt (a request
    with x-fal-no-retry, say, must not run again)."""
    seen: dict[str, tuple[str, int] | None] = {}
    watched: list[str] = []
    real_send, real_request = ConnectionPool.send, ConnectionPool.request

    def committed(headers: Any) -> None:
        ids = [v.decode() for k, v in headers if k == b"x-fal-request-id"]
        if ids and ids[0] in watched:
            # A connection of its own sees only what was committed.
            with contextlib.closing(sqlite3.connect(tmp_path / "queue.sqlite3")) as db:
                seen[ids[0]] = db.execute(
                    "SELECT state, attempts FROM requests WHERE id = ?", (ids[0],)
                ).fetchone()

    def send(pool: ConnectionPool, method: bytes, target: bytes, headers: Any, *a: Any) -> Any:
        if connection == "new":
            return None
        committed(headers)
        return real_send(pool, method, target, headers, *a)

    async def request(
        pool: ConnectionPool, method: bytes, target: bytes, headers: Any, *a: Any, **kw: Any
    ) -> Any:
        committed(headers)
        return await real_request(pool, method, target, headers, *a, **kw)

    monkeypatch.setattr(ConnectionPool, "send", send)
    monkeypatch.setattr(ConnectionPool, "request", request)
    gate = tmp_path / "gate"
    async with served(Retries, tmp_path) as app:
        first = await app.submit(json={"journal": str(tmp_path / "j"), "gate": str(gate)})

        async def running() -> bool:
            return (await app.status(first))[1]["status"] == "IN_PROGRESS"

        await wait_until(running, what="the first request to start")
        second = await app.submit(json={"journal": str(tmp_path / "j"), "key": "second"})
        assert (await app.status(second))[1]["status"] == "IN_QUEUE"  # the only slot is taken
        watched.append(second["request_id"])
        gate.touch()
        await app.completed(second)
    assert seen == {second["request_id"]: ("IN_PROGRESS", 1)}


@pytest.mark.parametrize("meanwhile", ["cancel", "stop"])
async def test_a_request_cancelled_or_stopped_between_its_start_and_its_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """Between a queued request's start (committed) and its send, a cancel completes it 499
    and a stop leaves it to the next router; either way the runner never hears of it then."""
    data, log, gate = tmp_path / "data", tmp_path / "j", tmp_path / "gate"
    watched: list[str] = []
    real = engine_module.unsent
    engines: list[QueueEngine] = []

    # The check made between a start and its send: what happens meanwhile is done first.
    def check(job: Job, slot: Slot, backlog: AppBacklog | None) -> Unsent | None:
        if job.id in watched:
            if meanwhile == "cancel":
                assert engines[0].cancel(job.id) == "CANCELLATION_REQUESTED"
            else:
                assert backlog is not None
                backlog.close()
        return real(job, slot, backlog)

    monkeypatch.setattr(engine_module, "unsent", check)
    async with served(Retries, data) as app:
        assert isinstance(app.platform.router.queue, QueueEngine)
        engines.append(app.platform.router.queue)
        first = await app.submit(json={"journal": str(log), "key": "first", "gate": str(gate)})

        async def running() -> bool:
            return (await app.status(first))[1]["status"] == "IN_PROGRESS"

        await wait_until(running, what="the first request to start")
        second = await app.submit(json={"journal": str(log), "key": "second"})
        watched.append(second["request_id"])
        gate.touch()
        await app.completed(first)
        if meanwhile == "cancel":
            final = await app.completed(second)
            assert final["error_type"] == "client_cancelled"
        else:
            slots = app.platform.router.routes[app.app_id].slots.values()
            await wait_until(
                lambda: all(slot.in_flight == 0 for slot in slots), what="the slot given back"
            )
    assert "second" not in journal_keys(log)
    if meanwhile == "stop":
        watched.clear()
        async with served(Retries, data) as app:
            path = urlsplit(second["status_url"]).path
            final = await app.completed({**second, "status_url": app.platform.url + path})
            assert final["status"] == "COMPLETED" and "error" not in final
        assert journal_keys(log).count("second") == 1


async def test_a_stop_waits_for_the_log_fetch_an_answer_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that comes in during the stop's grace period may start fetching the
    request's logs; the stop waits for that too, and the request is stored completed (it would
    otherwise run again after a restart)."""
    fetching = asyncio.Event()
    real = attempt_module.fetch_logs

    async def slow_fetch(*args: Any, **kw: Any) -> Any:
        fetching.set()
        await asyncio.sleep(0.5)
        return await real(*args, **kw)

    monkeypatch.setattr(attempt_module, "fetch_logs", slow_fetch)
    log, opened, gate = tmp_path / "j", tmp_path / "open", tmp_path / "gate"
    log.write_text("a 0\nb 0\n")  # Relogged answers 504 to a first attempt: these are later
    opened.touch()
    platform = Platform(fast_config(tmp_path / "data"))
    await platform.start()
    try:
        app_id = await platform.add_app(Relogged)
        async with aiohttp.ClientSession() as session:
            app = Served(platform, app_id, session)
            # The first request opens the connection the second finds idle (no task of its own).
            first = await app.submit(json={"journal": str(log), "key": "a", "gate": str(opened)})
            await app.completed(first)
            sub = await app.submit(json={"journal": str(log), "key": "b", "gate": str(gate)})

            async def running() -> bool:
                return (await app.status(sub))[1]["status"] == "IN_PROGRESS"

            await wait_until(running, what="the request to start")
            fetching.clear()
            stopping = asyncio.create_task(platform.stop(grace=10.0))
            assert platform.router.queue_api is not None
            await wait_until(lambda: platform.router.queue_api.closing, what="the stop to begin")
            gate.touch()  # the answer comes in the grace period, with logs to fetch
            await asyncio.wait_for(fetching.wait(), 60)
            await stopping
    finally:
        await platform.stop()
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "queue.sqlite3")) as db:
        (state,) = db.execute(
            "SELECT state FROM requests WHERE id = ?", (sub["request_id"],)
        ).fetchone()
    assert state == "COMPLETED"


async def test_a_request_whose_runner_is_retired_before_its_send_goes_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued request's runner retired between its start and its send (another answer asked
    for it to stop): the request goes back to the head of the queue, its attempt uncounted,
    and runs on the next free runner."""
    log = tmp_path / "j"
    gates = {key: tmp_path / f"gate-{key}" for key in ("first", "second")}
    watched: list[str] = []
    real = engine_module.unsent

    # The check made between a start and its send: the runner retires first.
    def check(job: Job, slot: Slot, backlog: AppBacklog | None) -> Unsent | None:
        if job.id in watched:
            watched.clear()
            slot.retired = True  # as terminate_slot leaves it
        return real(job, slot, backlog)

    monkeypatch.setattr(engine_module, "unsent", check)
    async with served(TwoRunners, tmp_path) as app:
        held = {}
        for key, gate in gates.items():
            held[key] = await app.submit(json={"journal": str(log), "key": key, "gate": str(gate)})
        for sub in held.values():

            async def running(sub: dict[str, Any] = sub) -> bool:
                return (await app.status(sub))[1]["status"] == "IN_PROGRESS"

            await wait_until(running, what="both runners to be busy")
        third = await app.submit(json={"journal": str(log), "key": "third", "fail_times": 0})
        watched.append(third["request_id"])
        gates["first"].touch()  # its runner takes the third request, and is retired at once
        await app.completed(held["first"])
        assert (await app.status(third))[1]["status"] == "IN_QUEUE"
        gates["second"].touch()
        await app.completed(third)
        code, body, _ = await app.result(third)
    pids = {key: pid for key, pid in (line.split() for line in log.read_text().splitlines())}
    assert code == 200, body
    assert body["attempt"] == 1  # one attempt, on the second's runner
    assert pids["third"] == pids["second"] != pids["first"]
