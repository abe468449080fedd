"""Tests for reading a submission's routing options off its headers and query."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from yurt.queue.model import Priority, Routing
from yurt.queue.routing import RoutingError, parse_routing


def parse(headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Routing:
    return parse_routing(CIMultiDict(headers or {}), query or {})


def test_defaults() -> None:
    """No headers: normal priority, no deadline, no hint, retries on, no webhook."""
    assert parse() == Routing()


def test_fal_headers() -> None:
    """Every fal routing header is read, names matched case-insensitively."""
    routing = parse(
        {
            "X-Fal-Queue-Priority": "LOW",
            "X-Fal-Request-Timeout": "2.5",
            "X-Fal-Runner-Hint": "lora-a",
            "X-Fal-No-Retry": "1",
        },
        {"fal_webhook": "https://example.com/hook"},
    )
    assert routing == Routing(Priority.LOW, 2.5, "lora-a", True, "https://example.com/hook")


def test_yurt_twins() -> None:
    """The x-yurt- twin of each header means the same."""
    routing = parse(
        {
            "x-yurt-queue-priority": "low",
            "x-yurt-request-timeout": "3",
            "x-yurt-runner-hint": "h",
            "x-yurt-no-retry": "true",
        },
        {"yurt_webhook": "http://127.0.0.1:9/x"},
    )
    assert routing == Routing(Priority.LOW, 3.0, "h", True, "http://127.0.0.1:9/x")


def test_fal_header_wins_over_its_twin() -> None:
    """Given both, the fal header is the one read."""
    assert parse({"x-fal-queue-priority": "normal", "x-yurt-queue-priority": "low"}) == Routing()


@pytest.mark.parametrize(
    ("headers", "query", "field"),
    [
        ({"x-fal-queue-priority": "high"}, {}, "x-fal-queue-priority"),
        ({"x-fal-request-timeout": "0"}, {}, "x-fal-request-timeout"),
        ({"x-fal-request-timeout": "nan"}, {}, "x-fal-request-timeout"),
        ({"x-fal-request-timeout": "inf"}, {}, "x-fal-request-timeout"),
        ({"x-fal-request-timeout": "ten"}, {}, "x-fal-request-timeout"),
        ({"x-fal-no-retry": "2"}, {}, "x-fal-no-retry"),
        ({}, {"fal_webhook": "example.com/hook"}, "fal_webhook"),
        ({}, {"fal_webhook": "file:///etc/passwd"}, "fal_webhook"),
    ],
)
def test_bad_values_name_the_field(
    headers: dict[str, str], query: dict[str, str], field: str
) -> None:
    """A malformed option raises with its location, shaped as a 422 detail entry."""
    with pytest.raises(RoutingError) as info:
        parse(headers, query)
    (entry,) = info.value.detail()
    assert entry["loc"][1] == field
    assert field in str(info.value)
