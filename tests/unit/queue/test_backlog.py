"""Tests for the order queued requests start in, and which runner each prefers."""

from __future__ import annotations

import gc
import types

from yurt.backends.base import RunnerEndpoint
from yurt.queue.backlog import AppBacklog
from yurt.queue.model import Job, Priority, Routing
from yurt.router.dispatch import Slot


def job(name: str, priority: Priority = Priority.NORMAL, hint: str | None = None) -> Job:
    return Job(name, "o/a", "/", "", [], b"", Routing(priority=priority, hint=hint), 0.0)


def slot(runner_id: str, hints: frozenset[str] = frozenset()) -> Slot:
    s = Slot(RunnerEndpoint(runner_id, "127.0.0.1", 1), 0.0)
    s.hints = hints
    return s


class Harness:
    def __init__(self, *slots: Slot) -> None:
        self.slots = list(slots)
        self.started: list[tuple[str, str]] = []
        self.backlog = AppBacklog(lambda: iter(self.slots), self._start, lambda: 1.0)

    def _start(self, j: Job, s: Slot) -> None:
        self.started.append((j.id, s.runner_id))

    def drain(self, s: Slot) -> list[str]:
        while self.backlog.offer(s):
            pass
        return [name for name, _ in self.started]


def test_normal_before_low_then_first_come() -> None:
    """Normal requests start before low ones; within a priority, in submission order."""
    h = Harness(a := slot("a"))
    for j in [job("l1", Priority.LOW), job("n1"), job("l2", Priority.LOW), job("n2")]:
        h.backlog.push(j)
    assert h.drain(a) == ["n1", "n2", "l1", "l2"]
    assert len(h.backlog) == 0


def test_positions_count_what_starts_first() -> None:
    """queue_position is how many requests start before this one."""
    h = Harness()
    jobs = [job("l1", Priority.LOW), job("n1"), job("n2")]
    for j in jobs:
        h.backlog.push(j)
    assert [h.backlog.position(j) for j in jobs] == [2, 0, 1]


def test_retry_goes_to_the_front_of_its_priority() -> None:
    """A retried request has waited already: it starts before later ones of its priority."""
    h = Harness(a := slot("a"))
    h.backlog.push(job("n1"))
    h.backlog.push(job("retried"), front=True)
    assert h.drain(a) == ["retried", "n1"]


def test_retry_skips_the_runner_it_failed_on_while_another_exists() -> None:
    """A request avoids the runner it failed on if another routable runner is there."""
    h = Harness(a := slot("a"), b := slot("b"))
    retried = job("r")
    retried.avoid.add("a")
    h.backlog.push(retried)
    assert not h.backlog.offer(a)
    assert h.backlog.offer(b)
    assert h.started == [("r", "b")]


def test_retry_takes_the_failed_runner_when_it_is_the_only_one() -> None:
    """With no other runner, the retry goes back to the one it failed on."""
    h = Harness(a := slot("a"))
    retried = job("r")
    retried.avoid.add("a")
    h.backlog.push(retried)
    assert h.backlog.offer(a)


def test_hint_prefers_a_matching_runner() -> None:
    """A hinted request waits for a runner whose hints match, if one is routable."""
    h = Harness(plain := slot("plain"), lora := slot("lora", frozenset({"lora-a"})))
    h.backlog.push(job("hinted", hint="lora-a"))
    h.backlog.push(job("other"))
    assert h.drain(plain) == ["other"]
    assert h.drain(lora) == ["other", "hinted"]


def test_hint_without_a_matching_runner_takes_any() -> None:
    """When no runner has the hint, any runner serves the request."""
    h = Harness(plain := slot("plain"))
    h.backlog.push(job("hinted", hint="lora-a"))
    assert h.drain(plain) == ["hinted"]


def test_pending_reports_count_and_oldest() -> None:
    """pending() gives the scheduler the depth and the longest wait."""
    h = Harness()
    assert h.backlog.pending() == (0, None)
    h.backlog.push(job("n1"))
    assert h.backlog.pending() == (1, 1.0)


def test_removed_requests_do_not_start() -> None:
    """A cancelled or expired request is taken out of the queue."""
    h = Harness(a := slot("a"))
    j = job("n1")
    h.backlog.push(j)
    assert h.backlog.remove(j)
    assert not h.backlog.remove(j)
    assert h.drain(a) == []


def test_closed_backlog_starts_nothing() -> None:
    """Once the router stops, queued requests stay queued."""
    h = Harness(a := slot("a"))
    h.backlog.push(job("n1"))
    h.backlog.close()
    assert not h.backlog.offer(a)
    assert len(h.backlog) == 1


def test_positions_hold_no_started_request() -> None:
    """Started requests (and their bodies) are not kept alive by the positions computed last."""
    h = Harness(a := slot("a"))
    started = job("n1")
    h.backlog.push(started)
    assert h.backlog.position(started) == 0
    assert h.drain(a) == ["n1"]
    gc.collect()
    # Only this test's frame refers to it now.
    assert [r for r in gc.get_referrers(started) if not isinstance(r, types.FrameType)] == []
