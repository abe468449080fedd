"""Runner hints: what ``App.provide_hints()`` says, checked and ready for a header."""

from __future__ import annotations

import structlog

from yurt.app import App

log = structlog.get_logger("yurt.runner")

HINTS_HEADER = "x-yurt-runner-hints"


def valid_hint(hint: object) -> bool:
    """The header joins hints with commas: a hint is non-empty printable ASCII without commas
    or surrounding spaces."""
    return (
        isinstance(hint, str)
        and bool(hint)
        and hint.isascii()
        and hint.isprintable()
        and "," not in hint
        and hint.strip() == hint
    )


class RunnerHints:
    """The App's latest hints. ``refresh()`` asks again, unless the App does not provide any."""

    def __init__(self, instance: App) -> None:
        self._instance = instance
        self._provided = type(instance).provide_hints is not App.provide_hints
        self._last_problem = ""
        self.current: list[str] = []

    def refresh(self) -> None:
        """Ask the App for its hints; keep the previous ones if asking fails."""
        if not self._provided:
            return
        try:
            raw = self._instance.provide_hints()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._warn(error, "provide_hints_failed", error=error)
            return
        if not isinstance(raw, list | tuple):
            self._warn(repr(raw), "provide_hints_refused", got=raw, reason="must return a list")
            return
        self.current = [h for h in raw if valid_hint(h)]
        dropped = [h for h in raw if not valid_hint(h)]
        if dropped:
            self._warn(
                repr(dropped),
                "runner_hints_dropped",
                hints=dropped,
                reason="a hint must be non-empty printable ASCII without commas or edge spaces",
            )

    def _warn(self, problem: str, event: str, **details: object) -> None:
        # Once per distinct problem, not on every request.
        if problem != self._last_problem:
            self._last_problem = problem
            log.warning(event, **details)

    def header(self) -> str:
        """The value of ``x-yurt-runner-hints``; "" when there are no hints."""
        return ",".join(self.current)
