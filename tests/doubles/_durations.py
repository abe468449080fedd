"""Go ``time.Duration`` strings, as Consul's JSON and both servers' ``?wait=`` read them."""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``"10s"``, ``"1m30s"``, ``"0"``); ValueError otherwise.

    Mirrors ``time.ParseDuration``: a bare number other than ``0`` has no unit and is an error.
    """
    if not isinstance(text, str):
        raise ValueError(f"time: invalid duration {text!r}")
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"time: invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(body):
        found = _PART.match(body, pos)
        if not found:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(found.group(1)) * _UNITS[found.group(2)]
        pos = found.end()
    return -total if text.startswith("-") else total


def go_duration(seconds: float) -> str:
    """A Go duration string for ``seconds``, as Nomad writes check intervals into Consul."""
    ns = round(seconds * 1e9)
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns}ns"
