"""The router's limits on a request head agree with the runner's parser, and aiohttp's own
error pages map to typed JSON answers."""

from __future__ import annotations

import json

from aiohttp import http_exceptions

from yurt.router.http import MAX_FIELD_SIZE, MAX_HEADERS, MAX_TARGET_SIZE, head_refusal
from yurt.runner import requests as runner
from yurt.runner.invoke import error_page


def test_limits_are_no_looser_than_the_runners() -> None:
    """The router forwards no head the runner's parser would refuse, its own headers added."""
    assert MAX_HEADERS + 3 <= runner.MAX_HEADERS  # request id, host, content-length
    assert MAX_FIELD_SIZE <= runner.MAX_FIELD_SIZE
    assert MAX_TARGET_SIZE <= runner.MAX_LINE_SIZE


def test_head_refusal_names_the_limit() -> None:
    """Too many headers or too long a header is 431, too long a target 414; within, None."""
    fine = [(b"x-a", b"1")] * MAX_HEADERS
    assert head_refusal(b"/a", fine) is None
    too_many = head_refusal(b"/a", [*fine, (b"x-b", b"1")])
    assert too_many is not None and too_many.status == 431
    assert json.loads(too_many.body)["error_type"] == "request_header_fields_too_large"
    name = b"x-long"
    at_limit = [(name, b"v" * (MAX_FIELD_SIZE - len(name)))]
    assert head_refusal(b"/a", at_limit) is None
    over = head_refusal(b"/a", [(name, b"v" * (MAX_FIELD_SIZE - len(name) + 1))])
    assert over is not None and over.status == 431
    assert (b"x-yurt-error-type", b"request_header_fields_too_large") in over.headers
    target = head_refusal(b"/" + b"a" * MAX_TARGET_SIZE, [])
    assert target is not None and target.status == 414


def test_error_page_types_aiohttps_refusals() -> None:
    """Parser refusals become 431 or 400 without the caller's bytes; failures 500."""
    line = http_exceptions.LineTooLong(b"x" * 100, 8190)
    assert error_page(400, line)[:2] == (431, "request_header_fields_too_large")
    many = http_exceptions.BadHttpMessage("Too many headers received")
    assert error_page(400, many)[0] == 431
    duplicate = http_exceptions.BadHttpMessage("Duplicate 'Content-Type' header found.")
    assert error_page(400, duplicate) == (
        400,
        "bad_request",
        "malformed HTTP request: Duplicate 'Content-Type' header found.",
    )
    invalid = http_exceptions.InvalidHeader(b"secret-bytes")
    status, kind, detail = error_page(400, invalid)
    assert (status, kind) == (400, "bad_request") and "secret-bytes" not in detail
    assert error_page(500, ValueError("boom"))[:2] == (500, "internal_error")
