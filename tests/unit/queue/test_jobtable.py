"""Tests for what an unfinished request holds in the queue's memory, and that it lets go."""

from __future__ import annotations

import asyncio

from yurt.queue.jobtable import JobTable
from yurt.queue.model import Job, Routing, State
from yurt.quota import Limits, Quotas


def job(name: str, body: bytes = b"abc", owner: str | None = None) -> Job:
    return Job(name, "o/a", "/", "", [], body, Routing(), 0.0, owner=owner)


def test_finish_lets_go_of_bytes_logs_and_the_body() -> None:
    """A request's body counts against its app until it finishes; its earlier attempts'
    logs come back once, and its body is dropped."""
    table = JobTable()
    a, b = job("a"), job("b", b"12345")
    table.add(a)
    table.add(b)
    assert table.held("o/a") == 8 and len(table) == 2 and "a" in table
    table.add_logs("a", [{"message": "one"}])
    table.add_logs("a", [])
    assert table.logs("a") == [{"message": "one"}]
    assert table.finish(a) == [{"message": "one"}]
    assert table.held("o/a") == 5 and a.body == b"" and "a" not in table
    assert table.finish(b) == [] and table.held("o/a") == 0


def test_an_app_whose_requests_all_finished_leaves_no_count_behind() -> None:
    """The byte count of an app goes once its last unfinished request finishes (as after an
    undeploy, whose requests in progress finish later), and a request finishing twice takes
    nothing twice."""
    table = JobTable()
    a, b = job("a"), Job("b", "o/gone", "/", "", [], b"12345", Routing(), 0.0)
    table.add(a)
    table.add(b)
    assert table.holding == {"o/a", "o/gone"}
    table.finish(b)
    table.finish(b)
    assert table.holding == {"o/a"} and table.held("o/gone") == 0
    table.finish(a)
    assert table.holding == frozenset() and table.held("o/a") == 0


def test_a_key_holds_its_quota_until_its_request_finishes() -> None:
    """A new request's quota share, taken by the gate, and one taken back after a restart are
    each released once, when the request finishes."""
    quotas = Quotas(Limits(unfinished=2))
    table = JobTable(quotas)
    new, old = job("new", owner="k"), job("old", owner="k")
    assert quotas.admit("k", 0.0) is None  # as the gate admits a submission
    table.add(new)
    table.add(old, taken_back=True)
    assert quotas.unfinished("k") == 2
    for j in (new, old, new):
        table.finish(j)
    assert quotas.unfinished("k") == 0


def test_running_counts_the_apps_requests_in_progress() -> None:
    """Only the app's requests in progress are counted as running."""
    table = JobTable()
    for name, state in [("a", State.IN_PROGRESS), ("b", State.IN_QUEUE)]:
        j = job(name)
        j.state = state
        table.add(j)
    assert table.running("o/a") == 1 and table.running("o/b") == 0


async def test_a_dropped_timer_never_fires() -> None:
    """Timers fire in the order armed; one dropped before its time (the request started or
    finished) never does, and one that fired is no longer armed."""
    table = JobTable()
    fired: list[str] = []
    done = asyncio.get_running_loop().create_future()
    first, second, third = job("1"), job("2"), job("3")
    table.arm_deadline(first, 0, lambda j: fired.append(j.id))
    table.arm_backoff(second, 0, lambda j: fired.append(j.id))
    table.arm_backoff(third, 0, lambda j: done.set_result(j.id))
    table.drop_timers("2")
    assert await asyncio.wait_for(done, 30) == "3"
    assert fired == ["1"]
    table.drop_timers("1")  # already fired: nothing to cancel


async def test_waiters_wake_once_per_change() -> None:
    """A waiter of an unfinished request wakes at its next change; one of an unknown request
    is done at once; a stop wakes them all."""
    table = JobTable()
    table.add(job("a"))
    table.add(job("b"))
    assert table.waiter("gone").done()
    wa, wb = table.waiter("a"), table.waiter("b")
    assert table.waiter("a") is wa and table.watched == 2
    table.notify("a")
    assert wa.done() and not wb.done() and table.watched == 1
    table.wake_all()
    assert wb.done() and table.watched == 0
