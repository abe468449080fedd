"""Tests for the router's rules table: direct (sync) and queued requests."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from yurt.router.pool import UpstreamErrorKind
from yurt.router.rules import (
    Verdict,
    direct_error,
    direct_status,
    queue_error,
    queue_status,
    should_retry,
)


@pytest.mark.parametrize(
    "status", [200, 201, 204, 299, 400, 401, 404, 409, 422, 429, 499, 500, 501, 502, 504, 599]
)
def test_runner_kept_and_response_passed_through(status: int) -> None:
    """2xx, 4xx, 504 and 5xx other than 503: keep the runner, return its response as is."""
    verdict = direct_status(status)
    assert verdict.terminate is False
    assert verdict.status is None
    assert verdict.error_type == ""


def test_503_terminates_and_passes_through() -> None:
    """A runner's 503 terminates it, and the caller gets that 503 unchanged."""
    verdict = direct_status(503)
    assert verdict.terminate is True
    assert verdict.status is None
    assert verdict.reason == "runner_returned_503"


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("disconnected", 503, "runner_disconnected"),
        ("connect_refused", 503, "runner_connection_refused"),
        ("connect_error", 503, "runner_connection_error"),
        ("timeout", 504, "request_timeout"),
    ],
)
def test_upstream_error_terminates_and_answers(
    kind: UpstreamErrorKind, status: int, error_type: str
) -> None:
    """A runner that fails before answering is terminated; the caller gets the table's error."""
    verdict = direct_error(kind)
    assert verdict.terminate is True
    assert (verdict.status, verdict.error_type, verdict.reason) == (status, error_type, error_type)
    assert verdict.detail


def test_every_upstream_error_kind_has_a_verdict() -> None:
    """Each kind the connection pool can report has an entry in the table."""
    for kind in typing.get_args(UpstreamErrorKind):
        assert isinstance(direct_error(kind), Verdict)


def test_verdicts_are_immutable() -> None:
    """Shared verdicts cannot be changed by one request for all others."""
    verdict = direct_status(200)
    with pytest.raises(AttributeError):
        verdict.terminate = True  # type: ignore[misc]


# -- the queue column ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminate", "retry", "condition"),
    [
        (200, False, False, None),
        (201, False, False, None),
        (400, False, False, None),
        (404, False, False, None),
        (418, False, False, None),
        (422, False, False, None),
        (429, False, True, None),
        (500, False, False, None),
        (502, False, False, None),
        (503, True, True, "server_error"),
        (504, False, True, "server_error"),
    ],
)
def test_queue_status_follows_the_table(
    status: int, terminate: bool, retry: bool, condition: str | None
) -> None:
    """Each runner answer gets the queue column's verdict."""
    verdict = queue_status(status)
    assert (verdict.terminate, verdict.retry, verdict.condition) == (terminate, retry, condition)


@pytest.mark.parametrize(
    ("kind", "condition"),
    [
        ("disconnected", "connection_error"),
        ("connect_refused", "connection_error"),
        ("connect_error", "connection_error"),
        ("timeout", "timeout"),
    ],
)
def test_queue_errors_terminate_and_retry(kind: UpstreamErrorKind, condition: str) -> None:
    """A crash, a refused connection or a timeout shuts the runner down and retries."""
    verdict = queue_error(kind)
    assert verdict.terminate and verdict.retry and verdict.condition == condition
    assert verdict.reason == direct_error(kind).reason


@pytest.mark.parametrize(
    ("status", "header", "retry"),
    [
        (500, b"1", True),
        (200, b"true", True),
        (504, b"0", False),
        (503, b"false", False),
        (504, b"maybe", True),  # not a yes or no: the table decides
    ],
)
def test_needs_retry_header_overrides_the_table(status: int, header: bytes, retry: bool) -> None:
    """X-Fal-Needs-Retry forces or prevents a retry; the runner's fate stays the table's."""
    verdict = queue_status(status, header)
    assert verdict.retry is retry
    assert verdict.terminate is (status == 503)


def test_forced_retry_is_not_vetoed_by_skip_conditions() -> None:
    """An app that asked for a retry gets it even where skip_retry_conditions would refuse."""
    verdict = queue_status(500, b"1")
    assert should_retry(verdict, attempts=1, max_attempts=10, no_retry=False, skip=["server_error"])


@pytest.mark.parametrize(
    ("attempts", "no_retry", "skip", "expected"),
    [
        (1, False, [], True),
        (9, False, [], True),
        (10, False, [], False),
        (1, True, [], False),
        (1, False, ["server_error"], False),
        (1, False, ["timeout", "connection_error"], True),
    ],
)
def test_should_retry(attempts: int, no_retry: bool, skip: list[Any], expected: bool) -> None:
    """Retries stop at the attempt limit, on x-fal-no-retry and on a skipped condition."""
    verdict = queue_status(504)
    assert (
        should_retry(verdict, attempts=attempts, max_attempts=10, no_retry=no_retry, skip=skip)
        is expected
    )


def test_skip_conditions_match_by_kind() -> None:
    """skip_retry_conditions=["timeout"] stops timeout retries but not connection ones."""
    skip: list[Any] = ["timeout"]
    kw: dict[str, Any] = {"attempts": 1, "max_attempts": 10, "no_retry": False, "skip": skip}
    assert not should_retry(queue_error("timeout"), **kw)
    assert should_retry(queue_error("disconnected"), **kw)
    assert not should_retry(queue_status(200), **kw)
