"""Tests for what becomes of a queued request after an attempt, and before its send."""

from __future__ import annotations

import pytest

from yurt.backends.base import RunnerEndpoint
from yurt.config import QueueConfig
from yurt.queue.backlog import AppBacklog
from yurt.queue.decide import (
    CUT_SHORT,
    Complete,
    Outcome,
    Retry,
    Unsent,
    decide,
    recovered,
    restartable,
    unsent,
)
from yurt.queue.model import Job, Result, Routing, State, Step, move
from yurt.queue.results import error_result
from yurt.router.dispatch import Slot
from yurt.router.pool import UpstreamErrorKind
from yurt.router.rules import queue_error, queue_status
from yurt.spec import RetryCondition

CONFIG = QueueConfig(max_attempts=3, retry_backoff=0.5, retry_backoff_max=1.5)


def job(attempts: int = 1, *, no_retry: bool = False, cancel: bool = False) -> Job:
    j = Job("r1", "o/a", "/", "", [], b"x", Routing(no_retry=no_retry), 0.0, attempts=attempts)
    j.cancel_requested = cancel
    return j


def answered(status: int, needs_retry: bytes | None = None, *, first: bool = False) -> Outcome:
    result = Result(status, [], b"{}")
    return Outcome(queue_status(status, needs_retry), result, cancelled_first=first)


def failed(kind: UpstreamErrorKind) -> Outcome:
    return Outcome(queue_error(kind), error_result(503, "runner_" + kind, "it broke"))


# The queue column of the rules table: (outcome, what follows a first of three attempts).
TABLE: list[tuple[str, Outcome, Retry | None]] = [
    ("200", answered(200), None),
    ("418", answered(418), None),
    ("429 kept", answered(429), Retry(backoff=0.5, reason=None)),
    ("503 terminated", answered(503), Retry(backoff=None, reason="runner_returned_503")),
    ("504 kept", answered(504), Retry(backoff=0.5, reason=None)),
    ("500", answered(500), None),
    ("needs-retry 1 on 500", answered(500, b"1"), Retry(backoff=0.5, reason=None)),
    ("needs-retry 0 on 503", answered(503, b"0"), None),
    (
        "disconnected",
        failed("disconnected"),
        Retry(backoff=None, reason="runner_disconnected"),
    ),
    (
        "refused",
        failed("connect_refused"),
        Retry(backoff=None, reason="runner_connection_refused"),
    ),
    ("timeout", failed("timeout"), Retry(backoff=None, reason="request_timeout")),
]


@pytest.mark.parametrize(("name", "outcome", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_the_rules_table_decides_a_first_attempt(
    name: str, outcome: Outcome, expected: Retry | None
) -> None:
    """Each row of the queue's rules table: retried (after the first backoff only while the
    runner is kept, the reason falling back to the result's error type), else completed as is."""
    then = decide(job(), outcome, CONFIG, [])
    if expected is None:
        assert then == Complete(outcome.result)
    else:
        reason = expected.reason or outcome.result.error_type
        assert then == Retry(backoff=expected.backoff, reason=reason)


@pytest.mark.parametrize("outcome", [o for _, o, r in TABLE if r is not None])
def test_no_retry_past_the_limit_or_when_the_caller_says_so(outcome: Outcome) -> None:
    """The last allowed attempt, or x-fal-no-retry, completes with the attempt's own result."""
    assert decide(job(3), outcome, CONFIG, []) == Complete(outcome.result)
    assert decide(job(no_retry=True), outcome, CONFIG, []) == Complete(outcome.result)


@pytest.mark.parametrize(
    ("skip", "outcome", "retried"),
    [
        (["server_error"], answered(503), False),
        (["server_error"], answered(504), False),
        (["server_error"], answered(500, b"1"), True),  # the app's word is not vetoed
        (["connection_error"], failed("disconnected"), False),
        (["timeout"], failed("timeout"), False),
        (["timeout"], failed("connect_error"), True),
    ],
)
def test_skip_retry_conditions_veto_their_own_kind(
    skip: list[RetryCondition], outcome: Outcome, retried: bool
) -> None:
    """An app's skip_retry_conditions stop the retries of their kind and only those."""
    then = decide(job(), outcome, CONFIG, skip)
    assert isinstance(then, Retry) is retried


def test_a_cancel_stops_a_retry_and_decides_it() -> None:
    """A cancelled request that would be retried completes 499 instead."""
    then = decide(job(cancel=True), answered(503), CONFIG, [])
    assert isinstance(then, Complete) and then.result.status == 499


@pytest.mark.parametrize(
    ("status", "first", "final"),
    [(418, False, 418), (418, True, 499), (500, True, 499), (200, True, 200), (499, True, 499)],
)
def test_a_cancel_decides_an_error_only_if_the_runner_had_it_first(
    status: int, first: bool, final: int
) -> None:
    """An error the endpoint answered before the cancel stands; one after it becomes 499;
    a success always stands."""
    then = decide(job(cancel=True), answered(status, first=first), CONFIG, [])
    assert isinstance(then, Complete) and then.result.status == final


def test_an_undeployed_apps_retry_completes_410() -> None:
    """A request that would be retried after its app was undeployed completes 410; one that
    would complete anyway keeps its result."""
    then = decide(job(), answered(503), CONFIG, [], served=False)
    assert isinstance(then, Complete) and then.result.error_type == "app_undeployed"
    done = answered(200)
    assert decide(job(), done, CONFIG, [], served=False) == Complete(done.result)


def test_the_backoff_grows_with_the_attempts_to_its_cap() -> None:
    """A kept runner's retry waits the configured backoff, doubling per attempt to its cap."""
    waits = [decide(job(n), answered(504), CONFIG, []) for n in (1, 2)]
    assert [w.backoff for w in waits if isinstance(w, Retry)] == [0.5, 1.0]
    many = QueueConfig(max_attempts=10, retry_backoff=0.5, retry_backoff_max=1.5)
    assert decide(job(5), answered(504), many, []) == Retry(backoff=1.5, reason=None)


def test_what_a_restart_finds_unfinished_runs_again_as_a_broken_connection_would() -> None:
    """A request a previous router left unfinished queues again, unless it was cancelled
    (499) or a broken connection would not be retried (503 ``runner_disconnected``)."""
    assert recovered(job(0), CONFIG, []) is None
    assert recovered(job(2), CONFIG, []) is None
    cancelled_one = recovered(job(1, cancel=True), CONFIG, [])
    assert cancelled_one is not None and cancelled_one.result.status == 499
    for spent in (job(3), job(1, no_retry=True)):
        done = recovered(spent, CONFIG, [])
        assert done is not None and done.result.error_type == "runner_disconnected"
    assert recovered(job(1), CONFIG, ["connection_error"]) is not None


def test_a_restart_reruns_what_a_broken_connection_would_retry() -> None:
    """A first attempt cut short by a restart runs again unless the caller, the app or the
    attempt limit says no."""
    assert queue_error("disconnected") == CUT_SHORT
    assert restartable(job(0), CONFIG, [])
    assert not restartable(job(0), QueueConfig(max_attempts=1), [])
    assert not restartable(job(0, no_retry=True), CONFIG, [])
    assert not restartable(job(0), CONFIG, ["connection_error"])


def test_unsent_names_why_in_order() -> None:
    """Before the send: an undeployed app, a stopping router, a cancel, then a retired runner
    stop it, in that order; otherwise it is sent."""
    s = Slot(RunnerEndpoint("r", "127.0.0.1", 1), 0.0)
    backlog = AppBacklog(lambda: iter([s]), lambda j, sl: None, lambda: 0.0)
    j = job()
    assert unsent(j, s, backlog) is None
    s.retired = True
    assert unsent(j, s, backlog) is Unsent.RETIRED
    j.cancel_requested = True
    assert unsent(j, s, backlog) is Unsent.CANCELLED
    backlog.close()
    assert unsent(j, s, backlog) is Unsent.STOPPING
    assert unsent(j, s, None) is Unsent.UNDEPLOYED


def test_moves_follow_the_step_table() -> None:
    """BEGIN counts an attempt on a runner, UNSTART undoes it, RETRY avoids that runner next
    time, COMPLETE ends it."""
    j = job(0)
    move(j, Step.BEGIN, runner_id="r1", now=5.0)
    assert (j.state, j.attempts, j.started_at, j.runner_id) == (State.IN_PROGRESS, 1, 5.0, "r1")
    move(j, Step.UNSTART)
    assert (j.state, j.attempts, j.started_at, j.runner_id) == (State.IN_QUEUE, 0, None, None)
    move(j, Step.BEGIN, runner_id="r2", now=6.0)
    move(j, Step.RETRY)
    assert (j.state, j.attempts, j.avoid) == (State.IN_QUEUE, 1, {"r2"})
    move(j, Step.COMPLETE)
    assert j.state is State.COMPLETED
