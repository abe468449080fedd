"""What a queued request leaves when it completes, and where its record is read from after.

A completed request's result and logs are written to the store, kept in memory for the reads
that follow (``RecentRecords``), counted in the router's tallies, and, if it asked for one,
announced by a webhook. Old results are purged from both places.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import structlog

from yurt.config import QueueConfig
from yurt.queue.jobtable import JobTable
from yurt.queue.model import Job, Result, State, Step, move
from yurt.queue.ports import EnginePort
from yurt.queue.recent import RecentRecords
from yurt.queue.results import cancelled, webhook_body
from yurt.queue.store import QueueStore, Record
from yurt.queue.webhooks import WebhookSender

log = structlog.get_logger("yurt.queue")


def best_effort(what: str, request_id: str, write: Callable[[], None]) -> None:
    """Run a store ``write`` made after acceptance; a refusal is logged, not raised.

    Past acceptance, memory is the truth: at worst the request runs again after a restart
    (at-least-once).
    """
    try:
        write()
    except sqlite3.Error as exc:
        log.error("queue_write_failed", what=what, request_id=request_id, error=str(exc))


class Completions:
    """Completes requests, and reads and purges the records of completed ones."""

    def __init__(
        self,
        store: QueueStore,
        table: JobTable,
        router: EnginePort,
        webhooks: WebhookSender | None,
        wall: Callable[[], float],
    ) -> None:
        self.store, self.table, self.router = store, table, router
        self.webhooks, self._wall = webhooks, wall
        self.recent = RecentRecords()

    def complete(self, job: Job, result: Result) -> None:
        """``job`` completes with ``result``: everything it held is let go."""
        move(job, Step.COMPLETE)
        logs = self.table.finish(job)
        now = self._wall()
        best_effort("completed", job.id, lambda: self.store.completed(job.id, result, logs, now))
        self.router.served(job.app_id, result.status, max(0.0, now - job.created_at))
        self.recent.add(
            Record(
                job.id,
                job.app_id,
                State.COMPLETED,
                job.created_at,
                job.started_at,
                now,
                result,
                logs,
                job.owner,
            )
        )
        # Per request, like an access log: debug when it succeeded, info when it did not.
        (log.debug if result.ok else log.info)(
            "queue_completed",
            request_id=job.id,
            app=job.app_id,
            status=result.status,
            attempts=job.attempts,
            error_type=result.error_type,
        )
        if job.routing.webhook and self.webhooks is not None:
            body = webhook_body(job.id, result)
            url = job.routing.webhook
            best_effort("webhook", job.id, lambda: self.store.add_webhook(job.id, url, body, now))
            self.webhooks.poke()
        self.table.notify(job.id)

    def record(self, request_id: str) -> Job | Record | None:
        """The live job, else the completed record (recent ones from memory), else None."""
        return (
            self.table.get(request_id) or self.recent.get(request_id) or self.store.get(request_id)
        )

    def cancel_stored(self, request_id: str) -> bool | None:
        """Cancel a request this router does not hold: None if unknown, False if it completed.

        One left unfinished by a router that served an app this one does not: nothing runs it
        now, so it completes cancelled.
        """
        record = self.recent.get(request_id) or self.store.get(request_id)
        if record is None:
            return None
        if record.state is State.COMPLETED:
            return False
        self.store.completed(request_id, cancelled(request_id), [], self._wall())
        return True

    async def purge_loop(self, config: QueueConfig, served: Callable[[], list[str]]) -> None:
        """Every ``purge_interval``, forget results older than ``retention`` (and unfinished
        requests as old of apps not ``served``: left by a router serving other apps)."""
        while True:
            await asyncio.sleep(config.purge_interval)
            cutoff = self._wall() - config.retention
            try:
                n = self.store.purge(cutoff, served=served())
            except sqlite3.Error as exc:  # try again next time
                log.error("queue_purge_failed", error=str(exc))
                continue
            self.recent.forget_before(cutoff)
            if n:
                log.info("queue_purged", requests=n)
