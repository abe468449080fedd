"""What the router asks of the queue: its HTTP routes and its engine (``yurt.queue``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from yurt.errors import RequestError
from yurt.router.dispatch import AppRoute

if TYPE_CHECKING:
    from yurt.router.admitted import Answer, QueueCall
    from yurt.router.server import Router


class QueueService(Protocol):
    """The queue's HTTP routes, as the router serves them (``yurt.queue.api.QueueApi``)."""

    async def serve(self, call: QueueCall) -> Answer:
        """Answer one queue call."""
        ...

    def close(self) -> None:
        """The router is stopping: open status streams end."""
        ...


class QueueEngine(Protocol):
    """The durable queue, as the router drives it (``yurt.queue.engine.QueueEngine``)."""

    def add_app(self, route: AppRoute) -> int:
        """Serve ``route``'s queue."""
        ...

    def remove_app(self, app_id: str, error: RequestError) -> int:
        """Fail the app's queued requests with ``error``; how many."""
        ...

    def runner_up(self, app_id: str) -> None:
        """The app has a routable runner again."""
        ...

    def start_failed(
        self, app_id: str, status: int, error_type: str, detail: str, *, final: bool = False
    ) -> int:
        """A runner of an app with none up failed to start; how many requests failed."""
        ...

    def start(self) -> None:
        """Start serving what is queued."""
        ...

    async def stop(self, grace: float = 5.0) -> None:
        """Stop, letting attempts in flight finish within ``grace``."""
        ...

    def depth(self, app_id: str) -> tuple[int, int] | None:
        """How many of the app's requests are queued and how many run; None: not served."""
        ...


class QueueParts(Protocol):
    """The durable queue as the router is made with it (``yurt.queue.parts.QueueParts``)."""

    def serve(self, router: Router) -> tuple[QueueEngine, QueueService]:
        """The queue's engine and HTTP routes on ``router``, made once, as the router is."""
        ...
