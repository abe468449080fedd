"""Tests for the queue's SQLite record: what a restart finds, batching, purging, the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from yurt.queue.model import Job, Priority, Result, Routing, State
from yurt.queue.schema import SCHEMA
from yurt.queue.store import QueueStore


def opened(path: Path) -> QueueStore:
    """A store on ``path``, opened (as the platform opens it when it starts)."""
    store = QueueStore(path)
    store.open()
    return store


def job(request_id: str, priority: Priority = Priority.NORMAL, body: bytes = b"{}") -> Job:
    return Job(
        id=request_id,
        app_id="o/a",
        endpoint="/gen",
        query="x=1",
        headers=[(b"content-type", b"application/json"), (b"x-caf\xe9", b"\xff")],
        body=body,
        routing=Routing(priority, 5.0, "h", True, "http://hook"),
        created_at=100.0,
    )


def test_a_store_is_made_without_io_and_closes_unopened(tmp_path: Path) -> None:
    """Nothing is made on disk until the store opens; closing one never opened does nothing."""
    store = QueueStore(tmp_path / "data" / "q.db")
    assert not (tmp_path / "data").exists()
    store.close()
    store.open()
    assert (tmp_path / "data" / "q.db").is_file()
    store.close()
    store.close()


def test_a_store_opened_twice_says_so(tmp_path: Path) -> None:
    """A second open is refused instead of leaking the first connection."""
    store = QueueStore(tmp_path / "q.db")
    store.open()
    with pytest.raises(RuntimeError, match="open already"):
        store.open()
    store.close()


def test_unfinished_requests_survive_reopening(tmp_path: Path) -> None:
    """Queued and in-progress requests come back after a reopen, normal first, in order."""
    store = opened(tmp_path / "q.db")
    for j in [job("l1", Priority.LOW), job("n1"), job("n2")]:
        store.add(j)
    running = job("n3")
    store.add(running)
    running.attempts, running.started_at = 1, 101.0
    store.started(running)
    done = job("n4")
    store.add(done)
    store.completed("n4", Result(200, [], b"{}"), [], 102.0)
    store.close()

    again = opened(tmp_path / "q.db")
    back = list(again.unfinished("o/a"))
    assert [j.id for j in back] == ["n1", "n2", "n3", "l1"]
    first = back[0]
    assert first.headers == job("x").headers and first.body == b"{}"
    assert first.routing == job("x").routing and first.target == b"/gen?x=1"
    assert back[2].attempts == 1
    assert list(again.unfinished("o/other")) == []
    again.close()


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"a", b"")],
        [(b"a", b"x: y"), (b"b", b" lead")],  # a ": " inside a value: kept as JSON
        [(b"a", b"x\ry"), (b"b\n", b"z")],  # what no HTTP parser hands on: kept as JSON too
        [(b"[a", b"b")],  # would be taken for JSON: kept as JSON
    ],
)
def test_headers_come_back_as_stored(tmp_path: Path, headers: list[tuple[bytes, bytes]]) -> None:
    """Whatever the headers hold, they come back as they went in."""
    store = opened(tmp_path / "q.db")
    store.add(replace(job("r"), headers=headers))
    (back,) = store.unfinished("o/a")
    assert back.headers == headers
    store.close()


def test_headers_written_as_json_by_an_earlier_store_are_read(tmp_path: Path) -> None:
    """Rows stored before headers were packed as lines (JSON) still read."""
    store = opened(tmp_path / "q.db")
    store.add(job("r"))
    store.completed("r", Result(200, [(b"content-type", b"text/plain")], b"ok"), [], 1.0)
    store.add(job("q"))
    store.commit()
    with contextlib.closing(sqlite3.connect(tmp_path / "q.db")) as db:
        db.execute("UPDATE requests SET headers = ?", (b'[["x-caf\\u00e9", "\\u00ff"]]',))
        db.execute("UPDATE requests SET result_headers = ?", (b'[["content-type", "a/b"]]',))
        db.commit()
    (back,) = store.unfinished("o/a")
    assert back.headers == [(b"x-caf\xe9", b"\xff")]
    record = store.get("r")
    assert record is not None and record.result is not None
    assert record.result.headers == [(b"content-type", b"a/b")]
    store.close()


def test_a_request_started_at_once_is_stored_started(tmp_path: Path) -> None:
    """A request added already started keeps its attempt and start time across a reopen."""
    store = opened(tmp_path / "q.db")
    started = job("s")
    started.state, started.attempts, started.started_at = State.IN_PROGRESS, 1, 101.0
    store.add(started)
    store.close()
    again = opened(tmp_path / "q.db")
    (back,) = again.unfinished("o/a")
    assert back.attempts == 1
    assert stored(tmp_path / "q.db", "s") == [("IN_PROGRESS",)]
    again.close()


def test_completed_record_keeps_result_and_logs_and_drops_the_body(tmp_path: Path) -> None:
    """A completed request keeps its result, error and logs; its input body is dropped."""
    store = opened(tmp_path / "q.db")
    store.add(job("r", body=b"x" * 1000))
    logs = [{"timestamp": "t", "level": "INFO", "source": "user", "message": "hi"}]
    result = Result(500, [(b"content-type", b"application/json")], b'{"detail":"no"}', "no", None)
    store.completed("r", result, logs, 200.0)
    record = store.get("r")
    assert record is not None and record.state is State.COMPLETED
    assert record.result == result and record.logs == logs and record.completed_at == 200.0
    assert store.get("missing") is None
    (size,) = (
        sqlite3.connect(tmp_path / "q.db")
        .execute("SELECT length(body) FROM requests WHERE id = 'r'")
        .fetchone()
    )
    assert size == 0
    store.close()


async def test_writes_in_one_loop_turn_share_a_commit(tmp_path: Path) -> None:
    """Writes commit at the end of the loop turn; durable() returns once they are on disk."""
    store = opened(tmp_path / "q.db")
    other = sqlite3.connect(tmp_path / "q.db")
    store.add(job("a"))
    store.add(job("b"))
    assert other.execute("SELECT count(*) FROM requests").fetchone() == (0,)
    await store.durable()
    assert other.execute("SELECT count(*) FROM requests").fetchone() == (2,)
    await store.durable()  # nothing pending: returns at once
    other.close()
    store.close()


async def test_a_killed_process_loses_nothing_committed(tmp_path: Path) -> None:
    """What durable() acknowledged is read back by a fresh connection without a clean close."""
    store = opened(tmp_path / "q.db")
    store.add(job("a"))
    await store.durable()
    # No close(): as if the process had been killed here.
    fresh = opened(tmp_path / "q.db")
    assert [j.id for j in fresh.unfinished("o/a")] == ["a"]
    fresh.close()
    store.close()


def test_purge_forgets_old_completed_requests_only(tmp_path: Path) -> None:
    """Purging drops requests completed before the cutoff and keeps unfinished ones."""
    store = opened(tmp_path / "q.db")
    for name, created, done in [("old", 5.0, 10.0), ("long", 50.0, 150.0), ("new", 400.0, 500.0)]:
        store.add(replace(job(name), created_at=created))
        store.completed(name, Result(200, [], b""), [], done)
    store.add(replace(job("queued"), created_at=60.0))
    assert store.purge(before=100.0) == 1
    assert store.get("old") is None
    assert store.get("new") is not None and store.get("queued") is not None
    assert store.get("long") is not None  # created before the cutoff, completed after it
    store.close()


def test_purge_finds_old_rows_among_many_by_rowid(tmp_path: Path) -> None:
    """Rows created before the cutoff are found by rowid, across gaps left by deletions and
    a wall clock that stepped back; a row the clock step hid goes at a later purge."""
    store = opened(tmp_path / "q.db")
    created = [float(t) for t in range(1000)]
    created[700] = 10.0  # the clock stepped back for one request
    for i, at in enumerate(created):
        store.add(replace(job(f"r{i}"), created_at=at))
        store.completed(f"r{i}", Result(200, [], b""), [], at + 1.0)
    for i in range(100, 300):
        store.withdraw(f"r{i}")  # gaps in the rowids
    assert store.purge(before=500.0) == 499 - 200
    assert store.get("r498") is None and store.get("r499") is not None
    assert store.get("r700") is not None  # behind the boundary: not this time
    assert store.purge(before=800.0) == 799 - 499
    assert store.get("r700") is None and store.get("r798") is None
    assert store.get("r799") is not None  # completed at 800.0: not before it
    assert store.purge(before=0.5) == 0
    store.close()


def test_webhook_outbox(tmp_path: Path) -> None:
    """Deliveries are due when queued, rescheduled on failure, settled when done."""
    store = opened(tmp_path / "q.db")
    store.add_webhook("r1", "http://hook", b"{}", now=10.0)
    store.add_webhook("r2", "http://hook", b"{}", now=20.0)
    assert store.next_due() == 10.0
    (d1,) = store.due(now=15.0, limit=10)
    assert (d1.request_id, d1.attempts) == ("r1", 0)
    store.failed(d1.id, attempts=1, next_at=30.0, error="HTTP 500")
    assert store.next_due() == 20.0
    (d2,) = store.due(now=25.0, limit=10)
    store.delivered(d2.id)
    assert [d.request_id for d in store.due(now=30.0, limit=10)] == ["r1"]
    store.failed(d1.id, attempts=2, next_at=None, error="HTTP 500")
    assert store.due(now=1e12, limit=10) == [] and store.next_due() is None
    store.close()


def test_a_store_without_the_cancel_column_gains_it(tmp_path: Path) -> None:
    """A store written before cancellations were recorded opens, and records them."""
    old = sqlite3.connect(tmp_path / "q.db")
    old.executescript(SCHEMA.replace(",\n    cancel_requested INTEGER NOT NULL DEFAULT 0", ""))
    old.close()
    store = opened(tmp_path / "q.db")
    store.add(job("a"))
    store.cancel_requested("a")
    (back,) = store.unfinished("o/a")
    assert back.cancel_requested
    store.close()


def test_a_store_with_the_former_full_indexes_moves_to_partial_ones(tmp_path: Path) -> None:
    """Opening a store made with full (app_id, state) and completed_at indexes drops them for
    the partial one of unfinished requests, which leaves completed rows out."""
    tables, marker, _ = SCHEMA.partition("-- A partial index")
    assert marker  # the tables alone, as before any index
    old = sqlite3.connect(tmp_path / "q.db")
    old.executescript(
        tables
        + "CREATE INDEX requests_open ON requests (app_id, state);"
        + "CREATE INDEX requests_completed ON requests (completed_at);"
        + "CREATE INDEX requests_done ON requests (completed_at) WHERE completed_at IS NOT NULL;"
    )
    old.close()
    store = opened(tmp_path / "q.db")
    store.add(replace(job("done"), created_at=5.0))
    store.completed("done", Result(200, [], b""), [], 10.0)
    store.add(job("queued"))
    store.commit()
    with contextlib.closing(sqlite3.connect(tmp_path / "q.db")) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"requests_open", "requests_completed", "requests_done"}.isdisjoint(names)
        assert "requests_unfinished" in names
        # Each partial index holds only the rows its queries look for.
        (unfinished,) = db.execute(
            "SELECT count(*) FROM requests INDEXED BY requests_unfinished"
            " WHERE state != 'COMPLETED'"
        ).fetchone()
        assert unfinished == 1
    assert [j.id for j in store.unfinished("o/a")] == ["queued"]
    assert store.purge(before=100.0) == 1 and store.get("done") is None
    store.close()


def test_purge_drops_old_requests_of_apps_no_longer_served(tmp_path: Path) -> None:
    """Unfinished requests of an app this router does not serve go after the retention; those
    of served apps, and recent ones, stay."""
    store = opened(tmp_path / "q.db")
    for name, app, created in [
        ("gone-old", "o/gone", 10.0),
        ("gone-new", "o/gone", 500.0),
        ("kept-old", "o/a", 10.0),
    ]:
        store.add(replace(job(name), app_id=app, created_at=created))
    assert store.purge(before=100.0, served=["o/a"]) == 1
    assert store.get("gone-old") is None
    assert store.get("gone-new") is not None and store.get("kept-old") is not None
    store.close()


def stored(path: Path, request_id: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT state FROM requests WHERE id = ?", (request_id,)).fetchall()


async def test_a_transaction_sqlite_rolled_back_acknowledges_nothing(tmp_path: Path) -> None:
    """A full disk makes SQLite roll the whole transaction back: a submission in it hears of
    it, and one made right after goes into a new transaction, acknowledged once committed
    (rather than committing on its own and then being told it failed)."""
    path = tmp_path / "q.db"
    store = opened(path)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 2}")  # the disk is nearly full

    async def submit(request: Job) -> None:  # as the engine submits: add, then await durable
        store.add(request)
        await store.durable()

    async def then_big_then_c() -> None:  # the same loop turn as "a"
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.add(job("big", body=b"x" * 200_000))
        store._db.execute("PRAGMA max_page_count=1000000")  # space again
        await submit(job("c"))

    first = asyncio.ensure_future(submit(job("a")))
    second = asyncio.ensure_future(then_big_then_c())
    with pytest.raises(sqlite3.OperationalError):
        await first  # "a" went with the transaction: not acknowledged
    await second  # "c" is acknowledged...
    assert stored(path, "a") == []
    assert stored(path, "c") == [("IN_QUEUE",)]  # ...and stored
    store.close()


async def test_a_rollback_outside_a_write_is_noticed_by_the_next_write(tmp_path: Path) -> None:
    """Rolled back during a read (simulated): the waiting acknowledgement fails, and the next
    write opens a new transaction rather than committing on its own."""
    path = tmp_path / "q.db"
    store = opened(path)

    async def submit(request: Job) -> None:
        store.add(request)
        await store.durable()

    first = asyncio.ensure_future(submit(job("a")))
    await asyncio.sleep(0)  # "a" is written and waits for this turn's commit
    store._db.execute("ROLLBACK")  # as SQLite may, on an error in a read
    store.add(job("c"))
    assert store._db.in_transaction
    with pytest.raises(sqlite3.OperationalError):
        await first
    await store.durable()
    assert stored(path, "a") == [] and stored(path, "c") == [("IN_QUEUE",)]
    store.close()


def test_a_request_keeps_the_key_that_owns_it(tmp_path: Path) -> None:
    """owner is stored with the request, read back by get and after a restart."""
    store = opened(tmp_path / "q.sqlite3")
    owned = job("r1")
    owned.owner = "0f8fad5b-d9cb-469f-a165-70867728950e"
    store.add(owned)
    store.add(job("r2"))
    store.commit()
    record = store.get("r1")
    assert record is not None and record.owner == owned.owner
    assert store.get("r2").owner is None  # type: ignore[union-attr]
    store.close()
    again = opened(tmp_path / "q.sqlite3")
    assert {j.id: j.owner for j in again.unfinished("o/a")} == {"r1": owned.owner, "r2": None}
    again.close()


def test_a_store_without_the_owner_column_gains_it(tmp_path: Path) -> None:
    """A store from before owners were kept opens, its requests owned by no one."""
    path = tmp_path / "q.sqlite3"
    store = opened(path)
    store.add(job("old"))
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE requests DROP COLUMN owner")
    db.commit()
    db.close()
    store = opened(path)
    assert [j.owner for j in store.unfinished("o/a")] == [None]
    store.close()
