"""The metrics tallies and their exposition."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from yurt.metrics import Histogram, Histograms, registry_for, render, tally

from support import sample_key, samples


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    """``le`` is inclusive, counts are cumulative, and ``+Inf`` holds everything."""
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        hist.observe(value)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert hist.total == 8.65


class _Fixed(Collector):
    def __init__(self, hists: Histograms) -> None:
        self.hists = hists

    def collect(self) -> Iterator[Metric]:
        yield self.hists.family("t_seconds", "test", ("app",))


def test_histograms_render_per_label_values() -> None:
    """Each label value gets its own series; the text parses back to what was observed."""
    hists = Histograms((1.0,))
    hists.observe(("a",), 0.5)
    hists.observe(("a",), 2.0)
    hists.observe(("b",), 0.25)
    body, content_type = render(registry_for(_Fixed(hists)), "")
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(body.decode())
    assert found[sample_key("t_seconds_bucket", {"app": "a", "le": "1.0"})] == 1
    assert found[sample_key("t_seconds_bucket", {"app": "a", "le": "+Inf"})] == 2
    assert found[sample_key("t_seconds_count", {"app": "b"})] == 1
    assert found[sample_key("t_seconds_sum", {"app": "a"})] == 2.5
    assert found[sample_key("process_open_fds")] > 0  # the process figures come along


def test_tally_starts_at_zero() -> None:
    counts: dict[tuple[str, ...], int] = {}
    tally(counts, ("x",))
    tally(counts, ("x",), 2)
    assert counts == {("x",): 3}


def test_a_runner_starts_without_prometheus_client() -> None:
    """prometheus_client (~40 ms to import) loads at a runner's first scrape, not its start."""
    code = "import sys, yurt.runner.__main__; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
