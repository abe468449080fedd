"""Prometheus metrics for the router and the runner: lock-free tallies, rendered when scraped.

The request paths only add to plain dicts and histograms owned by the single event loop (no
locks, no metric objects); a ``Collector`` turns them and the live state into metric families
at scrape time, and ``prometheus_client`` writes the text format (or OpenMetrics, when the
scraper's ``Accept`` asks for it). Each server has a registry of its own, with the process
figures (CPU, memory, open files) and ``python_info`` beside yurt's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # prometheus_client takes ~40 ms to import: not on a runner's cold start
    from prometheus_client.core import HistogramMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry

# Seconds: inference spans milliseconds (a small model) to minutes (a video).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

Labels = tuple[str, ...]


class Histogram:
    """Counts of observations per bucket, and their sum; not thread-safe (one event loop)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (``le`` is inclusive: a value on a bound counts in it)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs, cumulative, ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Histograms:
    """One ``Histogram`` per label values."""

    __slots__ = ("bounds", "by_labels")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.by_labels: dict[Labels, Histogram] = {}

    def observe(self, labels: Labels, value: float) -> None:
        """Count one observation under ``labels``."""
        found = self.by_labels.get(labels)
        if found is None:
            found = self.by_labels[labels] = Histogram(self.bounds)
        found.observe(value)

    def family(self, name: str, doc: str, label_names: Sequence[str]) -> HistogramMetricFamily:
        """The metric family, for a collector."""
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(name, doc, labels=label_names)
        for labels, hist in self.by_labels.items():
            family.add_metric(list(labels), hist.cumulative(), hist.total)
        return family


def tally(counts: dict[Labels, int], labels: Labels, by: int = 1) -> None:
    """Add ``by`` to the counter under ``labels``."""
    counts[labels] = counts.get(labels, 0) + by


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry with ``collector``, the process's figures and ``python_info``."""
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition (text format, or OpenMetrics when ``accept`` asks) and its content type."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
