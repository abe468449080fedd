"""The client's wire protocol, without I/O: requests to make, and what replies mean.

``Client`` and ``AsyncClient`` differ only in how bytes travel; everything they build or read
goes through here.
"""

from __future__ import annotations

import http
import json
import mimetypes
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple
from urllib.parse import urlencode, urlsplit

from yurt import __version__
from yurt.errors import YurtError

Priority = Literal["normal", "low"]
CancelOutcome = Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]
DEFAULT_TIMEOUT = 120.0
# The router comments on a quiet status stream every 15 s: a stream read waits at least this.
STREAM_SILENCE = 60.0
_USER_AGENT = f"yurt-client/{__version__}"
# The longest a result request asks the router to hold it for completion (``Prefer: wait``).
RESULT_WAIT = 60


class RequestFailed(YurtError):
    """The router answered with an error: a failed run or result, or an unknown request.

    ``status`` and ``error_type`` are the reply's (``499``/``client_cancelled`` for a cancelled
    request; ``error_type`` is None where neither the body nor the headers named one),
    ``detail`` its message, ``request_id`` the request's where the router named one.
    """

    def __init__(
        self, detail: str, *, status: int, error_type: str | None, request_id: str | None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error_type = error_type
        self.request_id = request_id

    def __str__(self) -> str:
        kind = f" {self.error_type}" if self.error_type else ""
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status}{kind}: {self.detail}{where}"


class ConnectionFailed(YurtError):
    """No reply: the router could not be reached, refused TLS, or went silent past the timeout.

    A run or submission may or may not have been accepted.
    """


# -- statuses (fal-client's names and fields) --------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Where a queued request is: ``Queued``, ``InProgress`` or ``Completed``."""


@dataclass(frozen=True)
class Queued(Status):
    """Waiting for a runner; ``position`` requests are ahead of it (0: next)."""

    position: int


@dataclass(frozen=True)
class InProgress(Status):
    """On a runner; ``logs`` so far when asked for, else None."""

    logs: list[dict[str, Any]] | None


@dataclass(frozen=True)
class Completed(Status):
    """Done, well or not: ``error`` and ``error_type`` are set when it failed."""

    logs: list[dict[str, Any]] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None


# -- pure: requests out, replies in ------------------------------------------------------------


class Call(NamedTuple):
    """One HTTP request to make."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | BinaryIO | None = None


class Reply(NamedTuple):
    """One HTTP reply, header names lower-cased."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def base_url(url: str) -> str:
    """The router's base URL, checked; without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError(
            f"router URL {url!r} is not a base URL; give scheme and host, "
            "e.g. http://127.0.0.1:8080 or https://yurt.example.com"
        )
    return url.rstrip("/")


def split_app(app: str) -> tuple[str, str]:
    """``owner/app[/sub/path]`` -> (``owner/app``, ``sub/path``), as fal's app ids split."""
    parts = app.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(
            f"app id {app!r} is not 'owner/app' or 'owner/app/path'; e.g. 'default/echo'"
        )
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def endpoint_url(base: str, app: str, path: str = "", *, queue: bool = False) -> str:
    """The URL of a sync run, or with ``queue`` of a submission, of ``app`` at ``path``."""
    app_id, sub = split_app(app)
    tail = "/".join(p for p in (sub, path.strip("/")) if p)
    url = f"{base}{'/queue' if queue else ''}/{app_id}"
    return f"{url}/{tail}" if tail else url


def request_urls(base: str, app: str, request_id: str) -> tuple[str, str, str]:
    """(response, status, cancel) URLs of a queued request; they drop any endpoint path."""
    app_id, _ = split_app(app)
    url = f"{base}/queue/{app_id}/requests/{request_id}"
    return url, f"{url}/status", f"{url}/cancel"


def default_context(url: str) -> ssl.SSLContext | None:
    """The TLS context of an https URL: the system's CAs, or those of ``$SSL_CERT_FILE``.

    Made per client (aiohttp makes its own when imported), so that ``SSL_CERT_FILE``, which
    OpenSSL reads as the context loads its default paths, counts whenever it was set.
    """
    return ssl.create_default_context() if url.startswith("https:") else None


def common_headers(key: str | None) -> dict[str, str]:
    """Headers every call carries."""
    headers = {"user-agent": _USER_AGENT, "accept": "application/json"}
    if key is not None:
        headers["authorization"] = f"Key {key}"
    return headers


def json_call(url: str, arguments: Any, headers: Mapping[str, str] | None) -> Call:
    """A POST of ``arguments`` as JSON."""
    out = {"content-type": "application/json", **(headers or {})}
    return Call("POST", url, out, json.dumps(arguments).encode())


def submit_call(
    base: str,
    app: str,
    arguments: Any,
    *,
    path: str = "",
    webhook_url: str | None = None,
    priority: Priority | None = None,
    hint: str | None = None,
    start_timeout: float | None = None,
    no_retry: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Call:
    """A submission, with the queue's routing options as fal sends them."""
    url = endpoint_url(base, app, path, queue=True)
    if webhook_url is not None:
        url += "?" + urlencode({"fal_webhook": webhook_url})
    out = dict(headers or {})
    if priority is not None:
        if priority not in ("normal", "low"):
            raise ValueError(f"priority {priority!r} is not one of 'normal', 'low'")
        out["x-fal-queue-priority"] = priority
    if start_timeout is not None:
        if not 0 < start_timeout < float("inf"):
            raise ValueError(f"start_timeout {start_timeout!r} must be a positive number")
        out["x-fal-request-timeout"] = str(float(start_timeout))
    if hint is not None:
        out["x-fal-runner-hint"] = hint
    if no_retry:
        out["x-fal-no-retry"] = "1"
    return json_call(url, arguments, out)


def status_call(url: str, with_logs: bool) -> Call:
    """A status query at the status URL, asking for logs or not."""
    return Call("GET", url + ("?logs=1" if with_logs else ""), {})


def stream_call(url: str, with_logs: bool) -> Call:
    """The status stream of the request at status URL ``url``."""
    query = "?logs=1" if with_logs else ""
    return Call("GET", f"{url}/stream{query}", {"accept": "text/event-stream"})


def result_call(url: str, timeout: float) -> tuple[Call, float]:
    """A result request at ``url`` that asks the router to answer once the request completes
    (RFC 7240 ``Prefer: wait``), within the client's ``timeout`` and ``RESULT_WAIT``; and how
    long to wait for its reply: the client's timeout beyond the wait asked for."""
    wait = max(1, min(RESULT_WAIT, int(timeout)))
    return Call("GET", url, {"prefer": f"wait={wait}"}), timeout + wait


def result_step(reply: Reply) -> Literal["done", "ask_again", "follow_stream"]:
    """What to do with the reply to a ``result_call``: decode it, send the call again (the
    wait ran out, the request still runs), or follow the status stream to completion first.

    A server that honoured ``Prefer: wait`` says so; its 400 ``request_in_progress`` (a stored
    result never carries the router's ``x-yurt-`` headers) means "still running". A server that
    did not (fal's queue) may answer an error while the request runs, so it is not trusted.
    """
    if reply.headers.get("preference-applied", "").lower().startswith("wait"):
        running = reply.headers.get("x-yurt-error-type") == "request_in_progress"
        return "ask_again" if reply.status == 400 and running else "done"
    return "follow_stream" if reply.status >= 300 else "done"


def request_failed(reply: Reply, request_id: str | None = None) -> RequestFailed:
    """The error a failed reply stands for, read off its ``{detail, error_type}`` body."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        body = None
    detail: Any = None
    error_type = None
    if isinstance(body, dict):
        detail = body.get("detail")
        error_type = body.get("error_type")
        if detail is None and isinstance(body.get("status"), str):  # a cancel's NOT_FOUND
            detail = body["status"]
    if detail is None:
        text = reply.body.decode("utf-8", "replace").strip()
        detail = text or _phrase(reply.status)
    if not isinstance(detail, str):  # e.g. a 422's list of validation errors
        detail = json.dumps(detail)
    error_type = error_type or reply.headers.get("x-fal-error-type")
    return RequestFailed(
        detail,
        status=reply.status,
        error_type=error_type or reply.headers.get("x-yurt-error-type"),
        request_id=reply.headers.get("x-fal-request-id") or request_id,
    )


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def decode_result(reply: Reply, request_id: str | None = None) -> Any:
    """A run's or result's body as JSON (as text if it is not JSON); raises on an error."""
    if reply.status >= 400:
        raise request_failed(reply, request_id)
    if not reply.body:
        return None
    try:
        return json.loads(reply.body)
    except ValueError:
        return reply.body.decode("utf-8", "replace")


def upload_call(
    base: str, body: bytes | BinaryIO, size: int, content_type: str, file_name: str | None
) -> Call:
    """A POST of a file's bytes to the router's file store (``POST /files/upload``); ``body``
    may be an open file, sent as it is read."""
    headers = {"content-type": content_type, "content-length": str(size)}
    if file_name:
        headers["x-fal-file-name"] = file_name
    return Call("POST", f"{base}/files/upload", headers, body)


def upload_target(path: str | os.PathLike[str], content_type: str | None) -> tuple[str, str, int]:
    """A local file's name, content type (guessed from the name when not given) and size."""
    p = Path(path)
    kind = content_type or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    return p.name, kind, p.stat().st_size


def decode_uploaded(reply: Reply) -> str:
    """An upload's reply: the file's URL."""
    data = decode_result(reply)
    try:
        url: str = data["url"]
        return url
    except (KeyError, TypeError) as exc:
        raise _bad_reply(reply, None, exc) from exc


def decode_submitted(reply: Reply) -> tuple[str, str, str, str]:
    """A submission's reply: the request id and its response, status and cancel URLs."""
    data = decode_result(reply)
    try:
        return data["request_id"], data["response_url"], data["status_url"], data["cancel_url"]
    except (KeyError, TypeError) as exc:
        raise _bad_reply(reply, None, exc) from exc


def parse_status(data: Any) -> Status:
    """A status object of the queue protocol as a ``Status``."""
    state = data.get("status") if isinstance(data, dict) else None
    if state == "IN_QUEUE":
        return Queued(position=int(data.get("queue_position") or 0))
    if state == "IN_PROGRESS":
        return InProgress(logs=data.get("logs"))
    if state == "COMPLETED":
        return Completed(
            logs=data.get("logs"),
            metrics=data.get("metrics") or {},
            error=data.get("error"),
            error_type=data.get("error_type"),
        )
    raise ValueError(f"not a queue status: {data!r}")


def decode_status(reply: Reply, request_id: str) -> Status:
    """A status reply (202 while pending, 200 once completed) as a ``Status``."""
    if reply.status not in (200, 202):
        raise request_failed(reply, request_id)
    try:
        return parse_status(json.loads(reply.body))
    except ValueError as exc:
        raise _bad_reply(reply, request_id, exc) from exc


def decode_cancel(reply: Reply, request_id: str) -> CancelOutcome:
    """A cancel reply: requested, or too late; an unknown request raises."""
    if reply.status == 202:
        return "CANCELLATION_REQUESTED"
    if reply.status == 400 and b"ALREADY_COMPLETED" in reply.body:
        return "ALREADY_COMPLETED"
    raise request_failed(reply, request_id)


def _bad_reply(reply: Reply, request_id: str | None, exc: Exception) -> RequestFailed:
    return RequestFailed(
        f"the router's reply is not the queue protocol's ({exc}); is the URL a yurt router?",
        status=reply.status,
        error_type="bad_reply",
        request_id=request_id,
    )


class EventReader:
    """Server-sent events, fed as bytes in chunks of any size; returns each event's data."""

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Take the next bytes of the stream; returns the data of the events they complete."""
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
            # else a comment (the router's keep-alives) or a field the protocol does not use
        return events


def stream_event(data: str, request_id: str) -> Status:
    """One event of a status stream as a ``Status``."""
    try:
        return parse_status(json.loads(data))
    except ValueError as exc:
        reply = Reply(200, {}, data.encode())
        raise _bad_reply(reply, request_id, exc) from exc


def stream_ended(url: str) -> ConnectionFailed:
    """The error for a status stream that closed before the request completed."""
    return ConnectionFailed(
        f"the status stream {url} closed without an event; the router may be restarting"
    )


def unreachable(url: str, exc: BaseException, timeout: float | None) -> ConnectionFailed:
    """The error for a call that got no reply."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
        why = f"no reply within {timeout:g} s" if timeout else "timed out"
    else:
        why = str(reason) or type(reason).__name__
    hint = "check the URL and that the router is running"
    if url.startswith("https:"):
        hint += "; for a private CA pass ssl_context or set SSL_CERT_FILE"
    return ConnectionFailed(f"{url}: {why}; {hint}")


def lower_headers(headers: Any) -> dict[str, str]:
    """Reply headers with lower-cased names, from http.client's or aiohttp's header objects."""
    return {k.lower(): v for k, v in headers.items()}
