"""Tests for ``RequestContext`` and ``App.current_request``."""

from __future__ import annotations

import threading

import pytest

import yurt
from yurt.app import CURRENT_REQUEST


class Echo(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


def test_current_request_is_none_outside_a_request() -> None:
    """Outside a request, current_request is None."""
    assert Echo().current_request is None


def test_current_request_reads_the_context_variable() -> None:
    """Inside a request, current_request is the context the runner set."""
    cancel = threading.Event()
    context = yurt.RequestContext("r1", {"x-a": "1"}, cancel)
    token = CURRENT_REQUEST.set(context)
    try:
        assert Echo().current_request is context
    finally:
        CURRENT_REQUEST.reset(token)
    assert (context.request_id, context.headers["x-a"], context.cancelled) == ("r1", "1", False)
    cancel.set()
    assert context.cancelled


def test_request_context_is_read_only() -> None:
    """A RequestContext's fields cannot be assigned."""
    context = yurt.RequestContext("r1", {})
    with pytest.raises(AttributeError):
        context.request_id = "r2"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        context.extra = 1  # type: ignore[attr-defined]


def test_provide_hints_defaults_to_empty() -> None:
    """App.provide_hints() returns an empty list unless overridden."""
    assert Echo().provide_hints() == []
