"""The router's replies as plain data, shared by both of its HTTP faces.

A ``Reply`` is what the core decided to answer; ``fastlane.py`` serialises it straight to bytes,
``web.py`` turns it into an aiohttp response. Neither face decides anything.
"""

from __future__ import annotations

import http
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from yurt.runner import requests as runner_limits

# Hop-by-hop headers (RFC 9110 section 7.6.1), those the pool writes itself, the request ids,
# which only the router sets, and the caller's credentials for yurt itself: ``Authorization``
# carries its key or the admin token, which the app has no use for and must not see (fal's
# gateway likewise forwards only its identity headers and the caller's own), and
# ``Proxy-Authorization`` is for the proxy it reaches first (RFC 9110 section 11.7.2).
DROPPED_REQUEST_HEADERS = frozenset(
    {
        b"authorization",
        b"proxy-authorization",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
        b"x-fal-request-id",
        b"x-yurt-request-id",
        b"x-yurt-runner-token",  # the router's own, to the runner; never a caller's
    }
)
JSON_TYPE = (b"content-type", b"application/json")
# Limits no looser than the runner's parser, so that what would get its text 400 gets the
# router's JSON 431 (or 414) before it is forwarded. The router adds a few headers of its own
# (the request id, host, content-length): the count leaves room for them.
MAX_HEADERS = runner_limits.MAX_HEADERS - 8
MAX_FIELD_SIZE = runner_limits.MAX_FIELD_SIZE
MAX_TARGET_SIZE = runner_limits.MAX_LINE_SIZE


@dataclass(slots=True)
class Reply:
    """A status, headers (without framing or request ids) and a complete body."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


# Request ids made ahead, 256 from one read of the system's randomness rather than one read
# (a system call) each; a forked child starts without its parent's.
_IDS: list[str] = []
_IDS_AHEAD = 256
os.register_at_fork(after_in_child=_IDS.clear)


def new_request_id() -> str:
    """A fresh random request id (32 hex digits)."""
    # os.urandom is five times cheaper than uuid4().hex and as unique.
    if _IDS:
        return _IDS.pop()
    digits = os.urandom(16 * _IDS_AHEAD).hex()
    _IDS.extend([digits[i : i + 32] for i in range(32, len(digits), 32)])
    return digits[:32]


def new_ordered_id() -> str:
    """A fresh request id (32 hex digits) that sorts by creation time, as a UUIDv7 does.

    Twelve digits of milliseconds since the epoch, then twenty random ones (80 bits, so ids
    stay unguessable). The queue store keys its rows by it: new ids land at the right edge of
    the B-tree, so a burst of submissions dirties one index page rather than one page each.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def error_reply(status: int, error_type: str, detail: str | list[dict[str, object]]) -> Reply:
    """A router-made error: ``{detail, error_type}`` with the error-type headers."""
    kind = error_type.encode()
    body = json.dumps({"detail": detail, "error_type": error_type}).encode()
    return Reply(
        status, [JSON_TYPE, (b"x-yurt-error-type", kind), (b"x-fal-error-type", kind)], body
    )


def invalid_reply(detail: list[dict[str, object]]) -> Reply:
    """422 for a malformed routing option: pydantic's ``detail`` list, ``bad_request``, and the
    error-type headers every router-made error has."""
    return error_reply(422, "bad_request", detail)


def head_refusal(target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Reply | None:
    """The 431 or 414 for a request head past the runner's limits; None if it is within."""
    if len(headers) > MAX_HEADERS:
        return error_reply(
            431,
            "request_header_fields_too_large",
            f"the request has {len(headers)} headers; at most {MAX_HEADERS} are accepted",
        )
    if len(target) > MAX_TARGET_SIZE:
        return error_reply(
            414, "uri_too_long", f"the request target exceeds {MAX_TARGET_SIZE} bytes"
        )
    for name, value in headers:
        if len(name) + len(value) > MAX_FIELD_SIZE:
            return error_reply(
                431,
                "request_header_fields_too_large",
                f"header {name[:64].decode('latin-1')!r} exceeds {MAX_FIELD_SIZE} bytes "
                "(name and value together)",
            )
    return None


def json_reply(value: object, status: int = 200) -> Reply:
    """A JSON reply."""
    return Reply(status, [JSON_TYPE], json.dumps(value).encode())


def end_to_end(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones and request ids."""
    return [(k, v) for k, v in raw if k.lower() not in DROPPED_REQUEST_HEADERS]


def forward_headers(
    raw: Iterable[tuple[bytes, bytes]], request_id: bytes
) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, with our request id."""
    out = end_to_end(raw)
    out.append((b"x-fal-request-id", request_id))
    return out


def forward_head(raw: Iterable[tuple[bytes, bytes]], request_id: bytes) -> bytes:
    """``forward_headers``, framed as header lines: what the pool writes after its own."""
    return b"%sx-fal-request-id: %s\r\n" % (end_to_end_lines(raw), request_id)


def end_to_end_lines(raw: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``end_to_end``, framed as header lines."""
    return b"".join([b"%s: %s\r\n" % h for h in raw if h[0].lower() not in DROPPED_REQUEST_HEADERS])


_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def reason(status: int) -> bytes:
    """The reason phrase of a status code (empty for unknown codes, as HTTP allows)."""
    return _REASONS.get(status, b"")


# Made once per known status: ``STATUS_LINES.get(status) or status_line(status)`` is a call
# fewer where a reply is framed.
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _REASONS.items()}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>`` and its line end, made once per known status."""
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d %s\r\n" % (status, reason(status))
