"""The router's ``/_yurt/metrics``: what the request paths counted, and the state when scraped.

Counters and histograms (requests by app, kind and status code; durations; queue waits; retries;
runner terminations) are tallied by the router and the queue as they go. Gauges (runners by
state, the target, requests in flight, waiting and queued, the oldest wait, each runner's GPUs)
are read from the router, backend and queue at scrape time, so they cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from yurt.backends.base import RunnerState
from yurt.metrics import Histograms, Labels, tally

if TYPE_CHECKING:
    from yurt.router.server import Router

SYNC, QUEUE = "sync", "queue"


class RouterStats:
    """Tallies the request paths add to; the event loop is their only writer."""

    __slots__ = ("durations", "queue_wait", "requests", "retries", "submitted", "terminations")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}  # (app, kind, status code)
        self.durations = Histograms()  # (app, kind): seconds from arrival (submission) to reply
        self.queue_wait = Histograms()  # (app,): submission to the first start on a runner
        self.submitted: dict[Labels, int] = {}  # (app,)
        self.retries: dict[Labels, int] = {}  # (app,)
        self.terminations: dict[Labels, int] = {}  # (app, reason)

    def served(self, app_id: str, kind: str, status: int, seconds: float) -> None:
        """A request answered (sync) or completed (queue)."""
        key = (app_id, kind, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.durations.observe((app_id, kind), seconds)

    def terminated(self, app_id: str, reason: str) -> None:
        """The router had a runner stopped."""
        tally(self.terminations, (app_id, reason))


class RouterCollector(Collector):
    """Builds the router's metric families at each scrape."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        """Every family, counters first."""
        stats = self.router.stats
        requests = CounterMetricFamily(
            "yurt_requests",
            "Requests answered (sync) or completed (queue), by HTTP status code.",
            labels=("app", "kind", "code"),
        )
        for (app_id, kind, status), count in stats.requests.items():
            requests.add_metric((app_id, kind, str(status)), count)
        yield requests
        yield stats.durations.family(
            "yurt_request_duration_seconds",
            "Seconds from a request's arrival (sync) or submission (queue) to its answer.",
            ("app", "kind"),
        )
        yield stats.queue_wait.family(
            "yurt_queue_wait_seconds",
            "Seconds from submission to the first start on a runner.",
            ("app",),
        )
        yield _counter(
            "yurt_queue_submitted", "Requests accepted by the queue.", ("app",), stats.submitted
        )
        yield _counter(
            "yurt_queue_retries", "Queue attempts retried by the rules.", ("app",), stats.retries
        )
        yield _counter(
            "yurt_runner_terminations",
            "Runners the router had stopped, by the rule that stopped them.",
            ("app", "reason"),
            stats.terminations,
        )
        yield from self._state()

    def _state(self) -> Iterator[Metric]:
        router, queue = self.router, self.router.queue
        runners = GaugeMetricFamily(
            "yurt_runners", "Runners the backend has, by state.", labels=("app", "state")
        )
        target = GaugeMetricFamily(
            "yurt_runners_target", "Runners last asked of the backend.", labels=("app",)
        )
        in_flight = GaugeMetricFamily(
            "yurt_requests_in_flight", "Requests on runners now.", labels=("app",)
        )
        waiting = GaugeMetricFamily(
            "yurt_requests_waiting",
            "Requests waiting for a runner: sync callers and queued requests.",
            labels=("app",),
        )
        oldest = GaugeMetricFamily(
            "yurt_oldest_wait_seconds",
            "How long the longest-waiting request has waited (0: none waits).",
            labels=("app",),
        )
        queued = GaugeMetricFamily(
            "yurt_queue_requests", "Unfinished queue requests, by status.", labels=("app", "status")
        )
        unplaced = GaugeMetricFamily(
            "yurt_runners_unplaceable",
            "1 while the backend cannot place runners the app needs (see /_yurt/apps).",
            labels=("app",),
        )
        gpus = GaugeMetricFamily(
            "yurt_runner_gpu_info",
            "The GPUs each routable runner checked it holds (always 1).",
            labels=("app", "runner_id", "name", "uuid"),
        )
        now = time.monotonic()
        for app_id, route in router.routes.items():
            by_state = dict.fromkeys(RunnerState, 0)
            for view in router.backend.runners(app_id):
                by_state[view.state] += 1
            for state, count in by_state.items():
                runners.add_metric((app_id, state.value), count)
            target.add_metric((app_id,), router.backend.target(app_id))
            unplaced.add_metric((app_id,), 0 if router.backend.unplaced(app_id) is None else 1)
            load = route.load()
            in_flight.add_metric((app_id,), load.in_flight)
            waiting.add_metric((app_id,), load.waiting)
            since = load.oldest_wait_since
            oldest.add_metric((app_id,), max(0.0, now - since) if since is not None else 0.0)
            depth = queue.depth(app_id) if queue is not None else None
            if depth is not None:
                queued.add_metric((app_id, "IN_QUEUE"), depth[0])
                queued.add_metric((app_id, "IN_PROGRESS"), depth[1])
            for slot in route.slots.values():
                if slot.retired:
                    continue
                for name, uuid in slot.gpus:
                    gpus.add_metric((app_id, slot.runner_id, name, uuid), 1)
        yield from (runners, target, unplaced, in_flight, waiting, oldest, queued, gpus)


def _counter(
    name: str, doc: str, label_names: tuple[str, ...], counts: dict[Labels, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=label_names)
    for labels, count in counts.items():
        family.add_metric(labels, count)
    return family
