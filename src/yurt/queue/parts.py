"""The durable queue's parts, as the router is made with them.

The router and the queue's engine need each other: the engine sends attempts on the router's
slots and counts in its tallies, and the router hands the engine its apps, its runners' comings
and goings and its stop. So the router is made with these parts and makes its engine and its
``/queue/`` routes from them (``serve``), and neither is handed the other afterwards. The store
and the webhook sender are opened and started by the platform (``yurt.platform``).
"""

from __future__ import annotations

from dataclasses import dataclass

from yurt.config import QueueConfig
from yurt.queue.api import QueueApi
from yurt.queue.engine import QueueEngine
from yurt.queue.ports import RouterPort
from yurt.queue.store import QueueStore
from yurt.queue.webhooks import WebhookSender
from yurt.quota import Quotas


@dataclass(frozen=True, slots=True)
class QueueParts:
    """The store, the settings, the webhook sender and the per-key quotas of one queue."""

    store: QueueStore
    config: QueueConfig
    webhooks: WebhookSender | None = None
    quotas: Quotas | None = None

    def serve(self, router: RouterPort) -> tuple[QueueEngine, QueueApi]:
        """The engine and the HTTP routes of this queue, on ``router`` (which calls this)."""
        engine = QueueEngine(self.store, self.config, router, self.webhooks, quotas=self.quotas)
        return engine, QueueApi(router, engine)
