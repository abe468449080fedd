"""The caller's one routing option a sync run reads, shared with the queue's. Pure."""

from __future__ import annotations

# Read from the fal header or its x-yurt- twin.
TIMEOUT = ("x-fal-request-timeout", "x-yurt-request-timeout")
TIMEOUT_HEADERS = frozenset(name.encode() for name in TIMEOUT)


class RoutingError(ValueError):
    """One option was malformed; ``loc`` names where, as in a 422 ``detail`` entry."""

    def __init__(self, loc: tuple[str, str], msg: str) -> None:
        super().__init__(f"{loc[1]}: {msg}")
        self.loc = loc
        self.msg = msg

    def detail(self) -> list[dict[str, object]]:
        """The 422 body's ``detail`` list, shaped as pydantic's."""
        return [{"loc": list(self.loc), "msg": self.msg, "type": "value_error"}]


def parse_start_timeout(name: str, value: str) -> float:
    """``X-Fal-Request-Timeout``: seconds, positive and finite; raises ``RoutingError``."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise RoutingError(("header", name), f"must be a positive number of seconds, not {value!r}")
    return seconds
