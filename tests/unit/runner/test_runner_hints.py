"""Tests for runner hints: asking the App, checking hints, and where cancel routes go."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

import yurt
from yurt.runner.hints import RunnerHints, valid_hint
from yurt.runner.server import cancel_paths
from yurt.spec import build_spec


class Plain(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}


class Hinting(yurt.App):
    def setup(self) -> None:
        self.answer: object = ["a", "b,c", "d"]

    def provide_hints(self) -> list[str]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]

    @yurt.endpoint("/")
    def run(self) -> dict[str, str]:
        return {}

    @yurt.endpoint("/images")
    def images(self) -> dict[str, str]:
        return {}

    @yurt.endpoint("/images/cancel")
    def own_cancel(self) -> dict[str, str]:
        return {}


@pytest.mark.parametrize(
    ("hint", "ok"),
    [
        ("model-a", True),
        ("a b", True),
        ("", False),
        ("a,b", False),
        (" a", False),
        ("é", False),
        ("a\nb", False),
        (3, False),
    ],
)
def test_valid_hint(hint: object, ok: bool) -> None:
    """A hint is non-empty printable ASCII, no commas, no edge spaces."""
    assert valid_hint(hint) is ok


def test_app_without_provide_hints_is_never_asked() -> None:
    """An App that does not override provide_hints has no hints and no header."""
    hints = RunnerHints(Plain())
    hints.refresh()
    assert (hints.current, hints.header()) == ([], "")


def test_invalid_hints_are_dropped_with_one_warning() -> None:
    """Invalid hints are dropped; the warning is logged once per distinct problem."""
    app = Hinting()
    app.setup()
    hints = RunnerHints(app)
    with capture_logs() as logs:
        hints.refresh()
        hints.refresh()
    assert hints.header() == "a,d"
    assert [e["event"] for e in logs] == ["runner_hints_dropped"]


def test_failing_provide_hints_keeps_the_previous_hints() -> None:
    """If provide_hints raises or returns a non-list, the last good hints stay."""
    app = Hinting()
    app.setup()
    hints = RunnerHints(app)
    app.answer = ["a"]
    hints.refresh()
    app.answer = RuntimeError("no")
    with capture_logs() as logs:
        hints.refresh()
    app.answer = "a"
    with capture_logs() as more:
        hints.refresh()
    assert hints.current == ["a"]
    assert [e["event"] for e in logs + more] == ["provide_hints_failed", "provide_hints_refused"]


def test_cancel_paths_skip_paths_the_app_declares() -> None:
    """Each endpoint gets {P}/cancel, "/" gets /cancel, and the App's own endpoint wins."""
    assert cancel_paths(build_spec(Plain)) == ["/cancel"]
    assert cancel_paths(build_spec(Hinting)) == ["/cancel", "/images/cancel/cancel"]
