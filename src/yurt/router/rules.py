"""What the router does with each runner outcome: the platform's rules table, as pure functions.

Direct (sync) requests are never retried:

=============================  ==================  ==========================================
runner outcome                 the runner          the caller gets
=============================  ==================  ==========================================
2xx, 4xx, 504, other 5xx       kept                the runner's response
503                            terminated          the runner's 503
connection breaks / crash      terminated          503 ``runner_disconnected``
connection refused / error     terminated          503 ``runner_connection_refused`` / ``_error``
request_timeout exceeded       terminated          504 ``request_timeout``
=============================  ==================  ==========================================

Queued requests are retried (up to the queue's attempt limit) where the table says so:

=============================  ==================  ==========================================
runner outcome                 the runner          the queued request
=============================  ==================  ==========================================
2xx                            kept                completed
4xx (but 429)                  kept                completed with the error
429 (runner full)              kept                retried
503                            terminated          retried (``server_error``)
504                            kept                retried (``server_error``)
other 5xx                      kept                completed with the error
connection breaks / refused    terminated          retried (``connection_error``)
request_timeout exceeded       terminated          retried (``timeout``)
=============================  ==================  ==========================================

``X-Fal-Needs-Retry`` from the app forces (``1``/``true``) or prevents (``0``/``false``) a retry;
the caller's ``x-fal-no-retry`` and the app's ``skip_retry_conditions`` prevent one.
"""

from __future__ import annotations

from dataclasses import dataclass

from yurt.router.pool import UpstreamErrorKind
from yurt.spec import RetryCondition


@dataclass(frozen=True, slots=True)
class Verdict:
    """``terminate`` the runner or not; ``status`` None passes the runner's response through."""

    terminate: bool
    reason: str = ""
    status: int | None = None
    error_type: str = ""
    detail: str = ""


KEEP = Verdict(terminate=False)
TERMINATE_PASS_503 = Verdict(terminate=True, reason="runner_returned_503")

_ERRORS: dict[UpstreamErrorKind, Verdict] = {
    "disconnected": Verdict(
        True,
        "runner_disconnected",
        503,
        "runner_disconnected",
        "the runner closed the connection before answering (it crashed or was killed)",
    ),
    "connect_refused": Verdict(
        True,
        "runner_connection_refused",
        503,
        "runner_connection_refused",
        "the runner refused the connection",
    ),
    "connect_error": Verdict(
        True,
        "runner_connection_error",
        503,
        "runner_connection_error",
        "the router could not connect to the runner",
    ),
    "timeout": Verdict(
        True,
        "request_timeout",
        504,
        "request_timeout",
        "the request ran longer than the app's request_timeout",
    ),
}


def direct_status(status: int) -> Verdict:
    """The verdict for a direct request whose runner answered with ``status``."""
    return TERMINATE_PASS_503 if status == 503 else KEEP


def direct_error(kind: UpstreamErrorKind) -> Verdict:
    """The verdict for a direct request whose runner failed before answering."""
    return _ERRORS[kind]


@dataclass(frozen=True, slots=True)
class QueueVerdict:
    """What to do with a queued request after one attempt."""

    terminate: bool
    retry: bool
    # The skip_retry_conditions entry that can veto the retry; None: nothing can.
    condition: RetryCondition | None = None
    reason: str = ""


def _needs_retry(value: bytes | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value in (b"1", b"true", b"yes"):
        return True
    if value in (b"0", b"false", b"no"):
        return False
    return None


# The queue column of the table, by status; any other status completes the request.
_QUEUE_STATUS = {
    503: QueueVerdict(True, True, "server_error", "runner_returned_503"),
    504: QueueVerdict(False, True, "server_error"),
    429: QueueVerdict(False, True),
}
_COMPLETE = QueueVerdict(False, False)


def queue_status(status: int, needs_retry: bytes | None = None) -> QueueVerdict:
    """The verdict for a queued request whose runner answered ``status``.

    ``needs_retry`` is the app's ``X-Fal-Needs-Retry`` header, which overrides the table.
    """
    verdict = _QUEUE_STATUS.get(status, _COMPLETE)
    forced = _needs_retry(needs_retry)
    if forced is None or forced == verdict.retry:
        return verdict
    # The app's word wins, and no skip condition vetoes what it asked for explicitly.
    return QueueVerdict(verdict.terminate, forced, None, verdict.reason)


_QUEUE_ERRORS: dict[UpstreamErrorKind, RetryCondition] = {
    "disconnected": "connection_error",
    "connect_refused": "connection_error",
    "connect_error": "connection_error",
    "timeout": "timeout",
}


def queue_error(kind: UpstreamErrorKind) -> QueueVerdict:
    """The verdict for a queued request whose runner failed before answering."""
    return QueueVerdict(True, True, _QUEUE_ERRORS[kind], _ERRORS[kind].reason)


def should_retry(
    verdict: QueueVerdict,
    *,
    attempts: int,
    max_attempts: int,
    no_retry: bool,
    skip: list[RetryCondition] | tuple[RetryCondition, ...],
) -> bool:
    """Whether a queued request goes back to the queue after ``attempts`` attempts."""
    if not verdict.retry or no_retry or attempts >= max_attempts:
        return False
    return verdict.condition is None or verdict.condition not in skip
