"""How a queued request ended, shaped for the store, the status and the result routes."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from yurt.queue.model import Header, Result
from yurt.webhooks import completion_body

JSON_TYPE: Header = (b"content-type", b"application/json")
# Result headers worth keeping: what the caller of GET .../requests/{id} should see.
_KEPT = frozenset(
    {b"content-type", b"content-encoding", b"content-disposition", b"x-yurt-error-type"}
)


def error_result(status: int, error_type: str, detail: str, **headers: str) -> Result:
    """A result the router made itself (the request never got a runner's answer)."""
    kind = error_type.encode()
    extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Result(
        status,
        [JSON_TYPE, (b"x-fal-error-type", kind), (b"x-yurt-error-type", kind), *extra],
        json.dumps({"detail": detail, "error_type": error_type}).encode(),
        error=detail,
        error_type=error_type,
    )


def upstream_result(status: int, headers: list[Header], body: bytes, elapsed: float) -> Result:
    """A runner's response as a result; for an error, its ``detail`` and error type."""
    kept = [(k, v) for k, v in headers if (n := k.lower()) in _KEPT or n.startswith(b"x-fal-")]
    result = Result(status, kept, body, inference_time=round(elapsed, 6))
    if result.ok:
        return result
    detail: Any = None
    error_type: str | None = None
    # RecursionError: a deeply nested body is still just an error body.
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            detail = parsed.get("detail")
            error_type = (
                parsed.get("error_type") if isinstance(parsed.get("error_type"), str) else None
            )
    if error_type is None:
        error_type = next(
            (v.decode() for k, v in headers if k.lower() == b"x-fal-error-type"), None
        )
    if detail is None:
        detail = body[:4096].decode("utf-8", "replace") or f"HTTP {status}"
    result.error = detail if isinstance(detail, str) else json.dumps(detail)
    result.error_type = error_type
    return result


def cancelled(request_id: str) -> Result:
    """The result of a cancelled request: 499 ``client_cancelled``."""
    return error_result(499, "client_cancelled", f"request {request_id} was cancelled")


def webhook_body(request_id: str, result: Result) -> bytes:
    """The completion webhook's body for ``result``."""
    content_type = next(
        # The media type alone: "application/json; charset=utf-8" is JSON too.
        (
            v.decode("latin-1").partition(";")[0].strip()
            for k, v in result.headers
            if k.lower() == b"content-type"
        ),
        None,
    )
    return completion_body(
        request_id,
        result.ok,
        result.status,
        result.body,
        content_type,
        result.error,
        result.error_type,
    )


def undeployed(app_id: str) -> Result:
    """The result of a request whose app was undeployed before it could run (again): 410."""
    detail = f"{app_id} was undeployed before this request completed"
    return error_result(410, "app_undeployed", detail)


def cut_short(attempts: int) -> Result:
    """The result of a request whose attempt ``attempts`` the router's end cut short, and
    which may not run again: 503 ``runner_disconnected``."""
    return error_result(
        503,
        "runner_disconnected",
        f"the router stopped during attempt {attempts} of this request, and it is not retried "
        "(x-fal-no-retry, skip_retry_conditions or max_attempts)",
    )


def not_started(timeout: float | None, why: str | None) -> Result:
    """The result of a request that did not start within its ``X-Fal-Request-Timeout``
    (``why``: what keeps its app's runners from being placed, if anything): 504."""
    because = f"; {why}" if why is not None else ""
    return error_result(
        504,
        "request_timeout",
        f"the request did not start within its X-Fal-Request-Timeout of {timeout:g}s" + because,
        x_fal_request_timeout_type="user",
    )
