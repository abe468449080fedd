"""What the queue needs of the router, as a protocol the router satisfies.

The queue sits above the router's dispatch (routes, slots, the rules table) and below nothing
of the router's server: it sees the router only through ``RouterPort``, so that the two never
import each other in a cycle and a test can hand the queue a router of its own making.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from yurt.backends.base import Backend
from yurt.config import RouterConfig
from yurt.errors import RequestError
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.gate import Gate
from yurt.router.http import Reply
from yurt.router.metrics import RouterStats


class RouterPort(Protocol):
    """The router as the queue uses it (``yurt.router.server.Router``)."""

    @property
    def config(self) -> RouterConfig:
        """The router's settings (the public URL handed back in queue replies)."""
        ...

    @property
    def routes(self) -> Mapping[str, AppRoute]:
        """The routed apps, by app id."""
        ...

    @property
    def stats(self) -> RouterStats:
        """The tallies the queue adds to (submissions, waits, retries, answers)."""
        ...

    @property
    def gate(self) -> Gate:
        """Who may call an app and see a request, and the per-key quotas (``router/gate.py``)."""
        ...

    @property
    def backend(self) -> Backend:
        """The backend, for why an app's runners cannot be placed."""
        ...

    def resolve(self, path: str) -> tuple[AppRoute, str] | Reply:
        """``/{owner}/{app}[/endpoint]`` -> (route, endpoint path), or a 404 reply."""
        ...

    def unplaceable(self, route: AppRoute) -> RequestError | None:
        """The error for an app none of whose runners can be placed; None if it may wait."""
        ...

    def terminate_slot(self, route: AppRoute, slot: Slot, reason: str) -> None:
        """Route nothing more to this runner and have it stopped."""
        ...
