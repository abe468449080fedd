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
"""

from __future__ import annotations

from dataclasses import dataclass

from yurt.router.pool import UpstreamErrorKind


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
