"""The queue's intake: what a submission must pass, the request it becomes, whether it may start
at once, and its durable record, without which it is not acknowledged.

``QueueEngine.submit`` takes a submission through these in order and then acts on the recorded
request: it starts it on the slot taken here, or queues it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from yurt.config import QueueConfig
from yurt.errors import RequestError
from yurt.queue.backlog import AppBacklog
from yurt.queue.completion import best_effort
from yurt.queue.decide import restartable
from yurt.queue.jobtable import JobTable
from yurt.queue.model import Header, Job, Routing
from yurt.queue.ports import EnginePort
from yurt.queue.store import QueueStore
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.http import end_to_end, new_ordered_id


class Intake:
    """Admits submissions to the queue and records them (``QueueEngine.submit``)."""

    def __init__(
        self,
        store: QueueStore,
        table: JobTable,
        router: EnginePort,
        config: QueueConfig,
        wall: Callable[[], float],
    ) -> None:
        self.store, self.table, self.router = store, table, router
        self.config, self._wall = config, wall

    def admit(
        self,
        route: AppRoute,
        backlog: AppBacklog,
        endpoint: str,
        query: str,
        headers: Iterable[Header],
        body: bytes,
        routing: Routing,
        owner: str | None,
    ) -> Job:
        """The request a submission becomes; or the ``RequestError`` that refuses it: its app's
        runners cannot be placed (it could only fail), or its app's queue is full."""
        if (refused := self.router.unplaceable(route)) is not None:
            raise refused
        held = self.table.held(route.app_id)
        if (
            len(backlog) >= self.config.max_queued
            or held + len(body) > self.config.max_queued_bytes
        ):
            raise RequestError(
                f"{route.app_id} has {len(backlog)} requests waiting ({held} bytes of bodies), "
                "the most its queue takes (QueueConfig.max_queued, max_queued_bytes); "
                "try again later",
                status=429,
                error_type="queue_full",
            )
        return Job(
            id=new_ordered_id(),
            app_id=route.app_id,
            endpoint=endpoint,
            query=query,
            headers=end_to_end(headers),
            body=body,
            routing=routing,
            created_at=self._wall(),
            owner=owner,
        )

    def slot_at_once(self, route: AppRoute, backlog: AppBacklog, job: Job) -> Slot | None:
        """A slot ``job`` may start on at once, taken; None if it must queue.

        Only for requests a restart would run again were the router to die between the
        write and the call: the store then says started, the runner never heard of it.
        """
        if len(backlog) or backlog.closed or job.routing.hint is not None:
            return None
        if not restartable(job, self.config, route.spec.skip_retry_conditions):
            return None
        return route.try_acquire_unwaited()

    async def record(self, route: AppRoute, job: Job, slot: Slot | None) -> None:
        """Record ``job`` durably, then hold and count it as unfinished; or raise: then it was
        not accepted, and its ``slot`` (taken by ``slot_at_once``) is free again."""
        try:
            self.store.add(job)
            await self.store.durable()
        except BaseException as exc:
            if slot is not None:
                route.release(slot)  # whatever ended the wait: the slot must not stay taken
            if not isinstance(exc, sqlite3.Error):
                # Cancelled while its record was written: never acknowledged, so never run.
                best_effort("withdrawn", job.id, lambda: self.store.withdraw(job.id))
                raise
            # Not recorded, so not accepted: the caller must hear so and may try again.
            raise RequestError(
                f"the queue could not record the request: {exc}",
                status=503,
                error_type="queue_unavailable",
            ) from exc
        self.table.add(job)
        self.router.submitted(job.app_id)
