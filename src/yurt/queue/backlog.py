"""One app's queued requests in memory, in the order they are to start."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

from yurt.queue.model import Job, Priority
from yurt.router.dispatch import Slot


class AppBacklog:
    """Normal-priority requests start before low ones; each priority is first come, first served.

    A request prefers a runner whose hints contain its ``X-Fal-Runner-Hint``, and a retried one a
    runner it has not failed on: it passes over a free runner only while another routable runner
    would suit it better.
    """

    def __init__(
        self,
        slots: Callable[[], Iterator[Slot]],
        start: Callable[[Job, Slot], None],
        clock: Callable[[], float],
    ) -> None:
        self._queues: dict[Priority, collections.deque[Job]] = {
            p: collections.deque() for p in Priority
        }
        self._slots = slots
        self._start = start
        self._clock = clock
        self._closed = False
        self._count = 0  # jobs in all queues: read on every submission
        # Positions, computed once per change of the queue: status polls read them often.
        self._version = 0
        # By id: holding the jobs would keep finished ones (and their bodies) alive.
        self._positions: dict[str, int] = {}
        self._positions_version = -1

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Start nothing more (the router is stopping); what is queued stays in the store."""
        self._closed = True

    def push(self, job: Job, *, front: bool = False) -> None:
        """Queue ``job``; a retry goes ``front`` of its priority, having waited already.

        A retry keeps its first ``queued_since``: its wait did not start over.
        """
        if not front or not job.queued_since:
            job.queued_since = self._clock()
        self._version += 1
        self._count += 1
        queue = self._queues[job.routing.priority]
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)

    def remove(self, job: Job) -> bool:
        """Take ``job`` out of the queue (cancelled or expired); False if it was not queued."""
        try:
            self._queues[job.routing.priority].remove(job)
        except ValueError:
            return False
        self._version += 1
        self._count -= 1
        return True

    def take_all(self) -> list[Job]:
        """Empty the queue, returning what was in it."""
        jobs = [job for queue in self._queues.values() for job in queue]
        for queue in self._queues.values():
            queue.clear()
        self._version += 1
        self._count = 0
        return jobs

    def position(self, job: Job) -> int:
        """How many requests start before ``job`` (0: it is next)."""
        if self._positions_version != self._version:
            ordered = (queued for queue in self._queues.values() for queued in queue)
            self._positions = {queued.id: i for i, queued in enumerate(ordered)}
            self._positions_version = self._version
        found = self._positions.get(job.id)
        if found is not None:
            return found
        # Not queued (it started meanwhile): behind everything of its priority and above.
        ahead = 0
        for priority, queue in self._queues.items():
            ahead += len(queue)
            if priority == job.routing.priority:
                break
        return ahead

    # -- the Backlog protocol ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether it was closed (the router stops): it starts nothing more."""
        return self._closed

    def pending(self) -> tuple[int, float | None]:
        """How many wait, and since when the longest-waiting one has."""
        oldest: float | None = None
        for queue in self._queues.values():
            if queue and (oldest is None or queue[0].queued_since < oldest):
                oldest = queue[0].queued_since
        return len(self), oldest

    def offer(self, slot: Slot) -> bool:
        """Start the first request that suits ``slot``; False if none does."""
        if self._closed or not self._count:
            return False
        now = self._clock()
        for queue in self._queues.values():
            for job in queue:
                if job.not_before <= now and self._suits(job, slot):
                    queue.remove(job)
                    self._version += 1
                    self._count -= 1
                    self._start(job, slot)
                    return True
        return False

    def _suits(self, job: Job, slot: Slot) -> bool:
        hint = job.routing.hint
        wants_hint = hint is not None and hint not in slot.hints
        avoided = slot.runner_id in job.avoid
        if not wants_hint and not avoided:
            return True
        for other in self._slots():
            if other is slot or other.retired:
                continue
            if avoided and other.runner_id not in job.avoid:
                return False
            if wants_hint and hint in other.hints and other.runner_id not in job.avoid:
                return False
        return True
