"""Reading the caller's routing options off a submission's headers and query. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from yurt.queue.model import Priority, Routing
from yurt.router.options import TIMEOUT, RoutingError, parse_start_timeout

__all__ = ["TIMEOUT", "RoutingError", "parse_routing", "parse_start_timeout"]

# Each option is read from the fal header or its x-yurt- twin.
PRIORITY = ("x-fal-queue-priority", "x-yurt-queue-priority")
HINT = ("x-fal-runner-hint", "x-yurt-runner-hint")
NO_RETRY = ("x-fal-no-retry", "x-yurt-no-retry")
WEBHOOK = ("fal_webhook", "yurt_webhook")

DEFAULT = Routing()
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no", ""})


def _first(source: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = source.get(name)
        if value is not None:
            return name, value.strip()
    return None


def parse_routing(headers: Mapping[str, str], query: Mapping[str, str]) -> Routing:
    """The routing options of a submission; raises ``RoutingError`` naming the bad field.

    ``headers`` must look names up case-insensitively (as aiohttp's do).
    """
    if not headers and not query:
        return DEFAULT  # most submissions ask for nothing
    priority = Priority.NORMAL
    if found := _first(headers, PRIORITY):
        name, value = found
        try:
            priority = Priority[value.upper()]
        except KeyError:
            raise RoutingError(("header", name), f"must be normal or low, not {value!r}") from None
    start_timeout = None
    if found := _first(headers, TIMEOUT):
        start_timeout = parse_start_timeout(*found)
    hint = None
    if found := _first(headers, HINT):
        hint = found[1] or None
    no_retry = False
    if found := _first(headers, NO_RETRY):
        name, value = found
        if value.lower() not in _TRUE | _FALSE:
            raise RoutingError(("header", name), f"must be 1 or 0, not {value!r}")
        no_retry = value.lower() in _TRUE
    webhook = None
    if found := _first(query, WEBHOOK):
        name, value = found
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RoutingError(("query", name), f"must be an http(s) URL, not {value!r}")
        webhook = value
    return Routing(
        priority=priority,
        start_timeout=start_timeout,
        hint=hint,
        no_retry=no_retry,
        webhook=webhook,
    )
