"""The queue's durable record: SQLite in WAL mode, with one commit per event-loop turn.

Every write runs at once inside an open transaction, so reads on the same connection see it; the
commit is scheduled for the end of the current loop turn, so a burst of submissions shares one.
A caller that must not answer before its write is durable (a submission) awaits ``durable()``.

With ``synchronous=NORMAL`` (the default durability) a committed transaction survives the router
being killed, since it is in the WAL file the kernel holds; ``full`` also fsyncs each commit, which
survives a power loss too (SQLite's "WAL mode" and "PRAGMA synchronous" documentation).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from yurt.privatefs import create_private, private_dir
from yurt.queue.headers import pack_headers, unpack_headers, without_credentials
from yurt.queue.model import Job, Priority, Result, Routing, State
from yurt.queue.schema import prepare
from yurt.queue.webhooks import Delivery

__all__ = ["QueueStore", "Record", "without_credentials"]

log = structlog.get_logger("yurt.queue")


@dataclass(frozen=True, slots=True)
class Record:
    """A request as stored: what status and result queries read."""

    id: str
    app_id: str
    state: State
    created_at: float
    started_at: float | None
    completed_at: float | None
    result: Result | None
    logs: list[dict[str, Any]]
    owner: str | None = None  # the key that submitted it, for a private app's request


class QueueStore:
    """Accepted requests, their results and logs, and the webhook outbox.

    Made without I/O; ``open`` makes (or reads) the database, ``close`` closes it.
    """

    _db: sqlite3.Connection  # from open() on

    def __init__(self, path: Path, durability: Literal["normal", "full"] = "normal") -> None:
        self.path = path
        self.durability = durability
        self._opened = False
        self._in_tx = False
        self._commit_scheduled = False
        self._waiters: list[asyncio.Future[None]] = []

    def open(self) -> None:
        """Open the database, made (owner-only) with its tables where there is none yet."""
        if self._opened:
            raise RuntimeError(f"the queue store {self.path} is open already")
        private_dir(self.path.parent)
        # Request bodies and results are the callers' own: the file is made 0600 before SQLite
        # opens it, and SQLite gives its -wal and -shm files the database file's mode.
        create_private(self.path)
        # Autocommit mode: transactions are opened and committed explicitly below.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            prepare(db, self.durability)
        except BaseException:
            db.close()
            raise
        self._db, self._opened = db, True

    def close(self) -> None:
        """Commit what is pending and close the database (if it was opened)."""
        if self._opened:
            self._opened = False
            self.commit()
            self._db.close()

    # -- transactions ------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> sqlite3.Cursor:
        if self._in_tx and not self._db.in_transaction:
            # Rolled back by SQLite outside a write of ours (during a read, say).
            self._dropped(sqlite3.OperationalError("the transaction was rolled back"))
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True
        try:
            cursor = self._db.execute(sql, params)
        except sqlite3.Error as exc:
            if not self._db.in_transaction:
                # SQLite rolled the whole transaction back (a full disk, an I/O error): the
                # writes before this one are gone, and so is any acknowledgement they awaited.
                self._dropped(exc)
            raise
        if not self._commit_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.commit()  # no loop to batch on: commit now
            else:
                self._commit_scheduled = True
                loop.call_soon(self.commit)
        return cursor

    def commit(self) -> None:
        """Commit the open transaction, if any, and wake those awaiting ``durable()``."""
        self._commit_scheduled = False
        waiters, self._waiters = self._waiters, []
        error: BaseException | None = None
        if self._in_tx:
            self._in_tx = False
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.error("queue_commit_failed", error=str(exc))
                error = exc
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
        for fut in waiters:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    def _dropped(self, error: sqlite3.Error) -> None:
        log.error("queue_transaction_rolled_back", error=str(error))
        self._in_tx = False  # the next write opens a new one, rather than autocommitting
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error)

    async def durable(self) -> None:
        """Return once every write made so far is committed."""
        if not self._in_tx:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    # -- requests ----------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Record a newly accepted request (queued, or started at once)."""
        r = job.routing
        self._write(
            "INSERT INTO requests (id, app_id, endpoint, query, headers, body, priority,"
            " start_timeout, hint, no_retry, webhook, created_at, state, attempts, started_at,"
            " owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.app_id,
                job.endpoint,
                job.query,
                pack_headers(job.headers),
                job.body,
                int(r.priority),
                r.start_timeout,
                r.hint,
                int(r.no_retry),
                r.webhook,
                job.created_at,
                job.state.value,
                job.attempts,
                job.started_at,
                job.owner,
            ),
        )

    def started(self, job: Job) -> None:
        """The request went to a runner (``attempts`` already counts this attempt); also what
        undoes a start recorded with ``add`` that did not happen after all."""
        self._write(
            "UPDATE requests SET state = ?, attempts = ?, started_at = ? WHERE id = ?",
            (job.state.value, job.attempts, job.started_at, job.id),
        )

    def withdraw(self, request_id: str) -> None:
        """Forget a request whose submission was never acknowledged."""
        self._write("DELETE FROM requests WHERE id = ?", (request_id,))

    def cancel_requested(self, request_id: str) -> None:
        """The caller cancelled a request in progress: it must not run again after a restart."""
        self._write("UPDATE requests SET cancel_requested = 1 WHERE id = ?", (request_id,))

    def requeued(self, job: Job, logs: list[dict[str, Any]] | None = None) -> None:
        """The request went back to the queue for another attempt, with the logs so far."""
        if logs is None:
            self._write(
                "UPDATE requests SET state = ? WHERE id = ?", (State.IN_QUEUE.value, job.id)
            )
            return
        self._write(
            "UPDATE requests SET state = ?, logs = ? WHERE id = ?",
            (State.IN_QUEUE.value, json.dumps(logs).encode() if logs else None, job.id),
        )

    def attempt_logs(self, app_id: str) -> dict[str, list[dict[str, Any]]]:
        """The logs of earlier attempts of the app's unfinished requests, by request id."""
        rows = self._db.execute(
            "SELECT id, logs FROM requests"
            " WHERE app_id = ? AND state != 'COMPLETED' AND logs IS NOT NULL",
            (app_id,),
        ).fetchall()
        return {row[0]: json.loads(row[1]) for row in rows}

    def completed(
        self, request_id: str, result: Result, logs: list[dict[str, Any]], now: float
    ) -> None:
        """The request ended with ``result``; its body is no longer needed."""
        self._write(
            "UPDATE requests SET state = ?, completed_at = ?, result_status = ?,"
            " result_headers = ?, result_body = ?, error = ?, error_type = ?,"
            " inference_time = ?, logs = ?, body = x'' WHERE id = ?",
            (
                State.COMPLETED.value,
                now,
                result.status,
                pack_headers(result.headers),
                result.body,
                result.error,
                result.error_type,
                result.inference_time,
                json.dumps(logs).encode() if logs else None,
                request_id,
            ),
        )

    def get(self, request_id: str) -> Record | None:
        """A request's stored state, result and logs."""
        row = self._db.execute(
            "SELECT id, app_id, state, created_at, started_at, completed_at, result_status,"
            " result_headers, result_body, error, error_type, inference_time, logs, owner"
            " FROM requests WHERE id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        result = None
        if row[6] is not None:
            result = Result(row[6], unpack_headers(row[7]), row[8] or b"", *row[9:12])
        return Record(
            id=row[0],
            app_id=row[1],
            state=State(row[2]),
            created_at=row[3],
            started_at=row[4],
            completed_at=row[5],
            result=result,
            logs=json.loads(row[12]) if row[12] else [],
            owner=row[13],
        )

    def unfinished(self, app_id: str) -> Iterator[Job]:
        """The app's requests not completed (after a restart: to queue again), oldest first."""
        rows = self._db.execute(
            "SELECT id, endpoint, query, headers, body, priority, start_timeout, hint,"
            " no_retry, webhook, created_at, attempts, cancel_requested, owner FROM requests"
            " WHERE app_id = ? AND state != 'COMPLETED' ORDER BY priority, rowid",
            (app_id,),
        ).fetchall()
        for row in rows:
            routing = Routing(
                priority=Priority(row[5]),
                start_timeout=row[6],
                hint=row[7],
                no_retry=bool(row[8]),
                webhook=row[9],
            )
            yield Job(
                id=row[0],
                app_id=app_id,
                endpoint=row[1],
                query=row[2],
                headers=unpack_headers(row[3]),
                body=row[4],
                routing=routing,
                created_at=row[10],
                attempts=row[11],
                cancel_requested=bool(row[12]),
                owner=row[13],
            )

    def purge(self, before: float, served: list[str] | None = None) -> int:
        """Forget requests completed before ``before`` and webhooks settled before it.

        Unfinished requests submitted before ``before`` to an app not in ``served`` (left by a
        router serving other apps on this data dir) are dropped too.
        """
        n = 0
        last = self._created_before(before)
        if last is not None:  # a request completed before ``before`` was created before it
            n += self._write(
                "DELETE FROM requests WHERE rowid <= ? AND completed_at < ?", (last, before)
            ).rowcount
        if served is not None:
            marks = ",".join("?" * len(served))
            # Candidates from the index of unfinished requests alone: created_at lies past the
            # body, so a scan of the table would read every queued body from disk.
            n += self._write(
                "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests INDEXED BY"
                f" requests_unfinished WHERE app_id NOT IN ({marks}) AND state != 'COMPLETED')"
                " AND created_at < ?",
                (*served, before),
            ).rowcount
        self._write("DELETE FROM webhooks WHERE state != 'pending' AND updated_at < ?", (before,))
        return n

    def _created_before(self, before: float) -> int | None:
        """The last rowid of the rows created before ``before``, or None.

        Rows are appended as requests are created, so creation times rise with rowids (give or
        take a step of the wall clock, which only delays a purge): a binary search over rowids
        finds the boundary in about log2(rows) lookups, where an index of completion times
        would cost every completion a write.
        """
        lo, hi = self._db.execute("SELECT min(rowid), max(rowid) FROM requests").fetchone()
        found = None
        while lo is not None and lo <= hi:
            mid = (lo + hi) // 2
            row = self._db.execute(
                "SELECT rowid, created_at FROM requests WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                (mid,),
            ).fetchone()
            if row is None:  # none left at or past ``mid`` (only if rows went meanwhile)
                hi = mid - 1
                continue
            rowid, created_at = row
            if created_at < before:
                found, lo = rowid, rowid + 1
            else:
                hi = mid - 1
        return found

    # -- the webhook outbox (WebhookOutbox) --------------------------------------------------

    def add_webhook(self, request_id: str, url: str, body: bytes, now: float) -> None:
        """Queue a delivery of ``body`` to ``url``, due now."""
        self._write(
            "INSERT INTO webhooks (request_id, url, body, next_at, state, updated_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?)",
            (request_id, url, body, now, now),
        )

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at ``now``."""
        rows = self._db.execute(
            "SELECT id, request_id, url, body, attempts FROM webhooks"
            " WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [Delivery(*row) for row in rows]

    def next_due(self) -> float | None:
        """When the next pending delivery is due."""
        row = self._db.execute(
            "SELECT MIN(next_at) FROM webhooks WHERE state = 'pending'"
        ).fetchone()
        return row[0] if row else None

    def delivered(self, delivery_id: int) -> None:
        """A delivery was accepted by its receiver."""
        self._write(
            "UPDATE webhooks SET state = 'delivered', attempts = attempts + 1, next_at = NULL,"
            " updated_at = ? WHERE id = ?",
            (time.time(), delivery_id),
        )

    def failed(self, delivery_id: int, attempts: int, next_at: float | None, error: str) -> None:
        """A delivery failed; ``next_at`` None means it was given up."""
        self._write(
            "UPDATE webhooks SET attempts = ?, next_at = ?, last_error = ?,"
            " state = CASE WHEN ? IS NULL THEN 'given_up' ELSE 'pending' END,"
            " updated_at = ? WHERE id = ?",
            (attempts, next_at, error, next_at, time.time(), delivery_id),
        )
