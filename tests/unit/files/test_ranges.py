"""Which bytes a GET of a file in a bucket asks for: ``Range`` and ``If-Range``."""

from __future__ import annotations

import pytest

from yurt.files.ranges import Span, plan

ETAG = '"abc"'
DATE = "Mon, 07 Dec 2026 12:00:00 GMT"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Span(200, 0, 99)),
        ("bytes=0-9", Span(206, 0, 9)),
        ("bytes=90-", Span(206, 90, 99)),
        ("bytes=90-500", Span(206, 90, 99)),
        ("bytes=-10", Span(206, 90, 99)),
        ("bytes=-500", Span(206, 0, 99)),
        ("bytes = 5 - 6", Span(206, 5, 6)),
        ("bytes=100-", Span(416, 0, -1)),
        ("bytes=100-200", Span(416, 0, -1)),
        ("bytes=-0", Span(416, 0, -1)),
        ("bytes=9-1", Span(200, 0, 99)),  # invalid: ignored
        ("bytes=0-1,5-6", Span(200, 0, 99)),  # several ranges: all is sent
        ("items=0-1", Span(200, 0, 99)),
        ("bytes=-", Span(200, 0, 99)),
        ("bytes=x-1", Span(200, 0, 99)),
    ],
)
def test_range_headers(header: str | None, expected: Span) -> None:
    """Each Range of a 100-byte file gives its span, 416 past the end, or all when ignored."""
    assert plan(header, None, 100, {ETAG, DATE}) == expected


def test_if_range_must_name_this_version() -> None:
    """A Range holds only when If-Range is the file's ETag or Last-Modified date."""
    assert plan("bytes=0-1", ETAG, 100, {ETAG, DATE}).status == 206
    assert plan("bytes=0-1", DATE, 100, {ETAG, DATE}).status == 206
    assert plan("bytes=0-1", '"other"', 100, {ETAG, DATE}) == Span(200, 0, 99)
    assert plan("bytes=0-1", 'W/"abc"', 100, {ETAG, DATE}).status == 200


def test_an_empty_file() -> None:
    """An empty file is sent whole (no bytes); any range of it is 416."""
    assert plan(None, None, 0, set()).length == 0
    assert plan("bytes=0-", None, 0, set()).status == 416
    assert plan("bytes=-5", None, 0, set()).status == 416


def test_lengths() -> None:
    """A span's length counts its bytes; a 416 carries none."""
    assert Span(206, 90, 99).length == 10
    assert Span(416, 0, -1).length == 0
