"""What the queue needs of the router, as protocols the router satisfies.

The queue sits above the router's dispatch (routes, slots, the rules table) and below nothing
of the router's server: it sees the router only through ``RouterPort`` (its HTTP routes) and
the narrower ``EnginePort`` (the engine), so that the two never import each other in a cycle
and a test can hand the queue a router of its own making.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from yurt.backends.base import Backend
from yurt.config import RouterConfig
from yurt.errors import RequestError
from yurt.metrics import tally
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.gate import Gate
from yurt.router.http import Reply
from yurt.router.metrics import QUEUE, RouterStats


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


class EnginePort(Protocol):
    """What the queue engine needs of the router, and nothing more.

    The engine sends attempts on the slots the router hands its backlogs; besides those it asks
    the router only these questions and tells it only these facts (``RouterLink`` answers them
    for a ``RouterPort``; a test may answer them itself).
    """

    def unplaceable(self, route: AppRoute) -> RequestError | None:
        """The error that refuses a submission to an app none of whose runners can be placed."""
        ...

    def unplaced(self, app_id: str) -> str | None:
        """Why the app's runners cannot be placed now, if anything stops them."""
        ...

    def slot(self, app_id: str, runner_id: str | None) -> Slot | None:
        """The routed slot of ``runner_id``, if the app and the runner are still routed."""
        ...

    def terminate_slot(self, route: AppRoute, slot: Slot, reason: str) -> None:
        """Route nothing more to this runner and have it stopped."""
        ...

    def submitted(self, app_id: str) -> None:
        """Count a request accepted into the app's queue."""
        ...

    def waited(self, app_id: str, seconds: float) -> None:
        """Note how long a request waited from its submission to its first start."""
        ...

    def retried(self, app_id: str) -> None:
        """Count a request sent back to the queue for another attempt."""
        ...

    def served(self, app_id: str, status: int, seconds: float) -> None:
        """Count a completed request, with its status and the time since its submission."""
        ...


class RouterLink:
    """``EnginePort`` over the router: the one place the queue reads the router's parts."""

    __slots__ = ("_router", "_stats")

    def __init__(self, router: RouterPort) -> None:
        self._router = router
        self._stats = router.stats

    def unplaceable(self, route: AppRoute) -> RequestError | None:
        """The router's answer (``Router.unplaceable``)."""
        return self._router.unplaceable(route)

    def unplaced(self, app_id: str) -> str | None:
        """The backend's reason, if it has one."""
        why = self._router.backend.unplaced(app_id)
        return why.detail if why is not None else None

    def slot(self, app_id: str, runner_id: str | None) -> Slot | None:
        """Looked up in the router's routes."""
        route = self._router.routes.get(app_id)
        return route.slots.get(runner_id or "") if route is not None else None

    def terminate_slot(self, route: AppRoute, slot: Slot, reason: str) -> None:
        """The router's ``terminate_slot``."""
        self._router.terminate_slot(route, slot, reason)

    def submitted(self, app_id: str) -> None:
        """Added to the router's tallies."""
        tally(self._stats.submitted, (app_id,))

    def waited(self, app_id: str, seconds: float) -> None:
        """Observed in the router's queue-wait histogram."""
        self._stats.queue_wait.observe((app_id,), seconds)

    def retried(self, app_id: str) -> None:
        """Added to the router's tallies."""
        tally(self._stats.retries, (app_id,))

    def served(self, app_id: str, status: int, seconds: float) -> None:
        """Counted as a queue-path request of the router's."""
        self._stats.served(app_id, QUEUE, status, seconds)
