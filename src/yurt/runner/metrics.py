"""The runner's ``/_yurt/metrics``: its requests, its state, and its GPUs as NVML sees them now.

Imported at the first scrape (prometheus_client is slow to import; a cold start is not the time).

Scraped per runner (on Nomad, Prometheus finds runners through Consul: their service carries the
tag ``yurt``). The GPU figures are read when scraped, through the same NVML handles the runner
checked at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from yurt.runner.gpus import GpuInfo

if TYPE_CHECKING:
    from yurt.runner.server import RunnerServer

MIB = 1024 * 1024


class RunnerCollector(Collector):
    """Builds the runner's metric families at each scrape."""

    def __init__(self, server: RunnerServer) -> None:
        self.server = server
        self.gpus: list[GpuInfo] = []  # read just before each scrape (NVML calls block)

    def collect(self) -> Iterator[Metric]:
        """Every family."""
        server, stats = self.server, self.server.stats
        info = GaugeMetricFamily(
            "yurt_runner_info",
            "The app this runner serves (always 1).",
            labels=("app_name", "class_name", "revision", "runner_id"),
        )
        spec = server.spec
        info.add_metric(
            (spec.app_name, spec.class_name, server.header.revision, server.runner_id), 1
        )
        yield info
        state = GaugeMetricFamily(
            "yurt_runner_state", "1 for the state the runner is in.", labels=("state",)
        )
        for name in server.STATES:
            state.add_metric((name,), 1 if server.state == name else 0)
        yield state
        requests = CounterMetricFamily(
            "yurt_runner_requests",
            "Endpoint requests answered, by endpoint path and HTTP status code.",
            labels=("endpoint", "code"),
        )
        for (path, status), count in stats.requests.items():
            requests.add_metric((path, str(status)), count)
        yield requests
        yield stats.durations.family(
            "yurt_runner_request_duration_seconds",
            "Seconds an endpoint request spent in the runner.",
            ("endpoint",),
        )
        yield GaugeMetricFamily(
            "yurt_runner_requests_in_flight", "Endpoint requests being served.", server.in_flight
        )
        yield GaugeMetricFamily(
            "yurt_runner_max_multiplexing",
            "Endpoint requests the runner serves at once at most.",
            spec.max_multiplexing,
        )
        if server.setup_seconds is not None:
            yield GaugeMetricFamily(
                "yurt_runner_setup_seconds", "How long setup() took.", server.setup_seconds
            )
        yield from self._gpus()

    def _gpus(self) -> Iterator[Metric]:
        labels = ("index", "uuid", "name")
        total = GaugeMetricFamily(
            "yurt_gpu_memory_total_bytes", "Memory of each GPU the runner holds.", labels=labels
        )
        used = GaugeMetricFamily(
            "yurt_gpu_memory_used_bytes",
            "Memory in use on each GPU, by any process.",
            labels=labels,
        )
        busy = GaugeMetricFamily(
            "yurt_gpu_utilization_ratio",
            "Share of the last sample period a kernel ran on each GPU (NVML's utilization).",
            labels=labels,
        )
        for gpu in self.gpus:
            key = (str(gpu.index), gpu.uuid, gpu.name)
            total.add_metric(key, gpu.memory_total_mib * MIB)
            used.add_metric(key, gpu.memory_used_mib * MIB)
            if gpu.utilization_pct is not None:
                busy.add_metric(key, gpu.utilization_pct / 100)
        yield from (total, used, busy)
