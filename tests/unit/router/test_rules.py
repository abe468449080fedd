"""Tests for the router's rules table for direct (sync) requests."""

from __future__ import annotations

import typing

import pytest

from yurt.router.pool import UpstreamErrorKind
from yurt.router.rules import Verdict, direct_error, direct_status


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
