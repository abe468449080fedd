"""Tests for the pure scaling policy: ``desired_runners`` and ``decide``."""

from __future__ import annotations

from typing import Any

import pytest

import yurt
from yurt.scheduler.policy import AppLoad, Decision, RunnerLoad, decide, desired_runners
from yurt.spec import AppSpec


class Scaled(yurt.App):
    """The App whose spec the decisions are made for."""

    @yurt.endpoint("/")
    def run(self) -> None:
        return None


BASE = yurt.build_spec(Scaled)


def spec(**knobs: Any) -> AppSpec:
    """Scaled's spec with room for 10 runners, changed by ``knobs``."""
    return BASE.model_copy(update={"max_concurrency": 10, **knobs})


def idle(runner_id: str, since: float) -> RunnerLoad:
    """A runner with nothing in flight since ``since``."""
    return RunnerLoad(runner_id, 0, since)


def busy(runner_id: str, in_flight: int = 1) -> RunnerLoad:
    """A runner serving ``in_flight`` requests."""
    return RunnerLoad(runner_id, in_flight, None)


# -- desired_runners -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demand", "mux", "lo", "hi", "buffer", "perc", "expected"),
    [
        pytest.param(0, 1, 0, 2, 0, 0, 0, id="no-demand-scales-to-zero"),
        pytest.param(0, 1, 2, 5, 0, 0, 2, id="no-demand-keeps-min"),
        pytest.param(1, 1, 0, 5, 0, 0, 1, id="one-request-one-runner"),
        pytest.param(3, 1, 0, 5, 0, 0, 3, id="one-runner-per-request"),
        pytest.param(1, 4, 0, 5, 0, 0, 1, id="multiplexing-rounds-up-1"),
        pytest.param(4, 4, 0, 5, 0, 0, 1, id="multiplexing-exact"),
        pytest.param(5, 4, 0, 5, 0, 0, 2, id="multiplexing-rounds-up-5"),
        pytest.param(9, 4, 0, 5, 0, 0, 3, id="multiplexing-rounds-up-9"),
        pytest.param(0, 1, 0, 5, 2, 0, 2, id="buffer-with-no-demand"),
        pytest.param(3, 1, 0, 10, 2, 0, 5, id="buffer-on-top-of-demand"),
        pytest.param(5, 4, 0, 10, 1, 0, 3, id="buffer-counts-runners"),
        pytest.param(4, 1, 0, 10, 0, 50, 6, id="buffer-perc"),
        pytest.param(3, 1, 0, 10, 0, 50, 5, id="buffer-perc-rounds-up"),
        pytest.param(8, 4, 0, 10, 0, 100, 4, id="buffer-perc-of-runners"),
        pytest.param(0, 1, 0, 10, 0, 100, 0, id="buffer-perc-of-nothing"),
        pytest.param(3, 1, 0, 10, 1, 50, 5, id="larger-of-buffers-perc"),
        pytest.param(3, 1, 0, 10, 3, 50, 6, id="larger-of-buffers-abs"),
        pytest.param(10, 1, 0, 3, 0, 0, 3, id="clamped-to-max"),
        pytest.param(2, 1, 0, 3, 5, 0, 3, id="buffer-clamped-to-max"),
        pytest.param(1, 1, 2, 5, 0, 0, 2, id="min-raises-target"),
        pytest.param(0, 1, 3, 2, 0, 0, 3, id="min-wins-over-max"),
    ],
)
def test_desired_runners(
    demand: int, mux: int, lo: int, hi: int, buffer: int, perc: int, expected: int
) -> None:
    """clamp(ceil(demand / mux) + max(buffer, perc% of those runners), min, max)."""
    got = desired_runners(
        demand,
        max_multiplexing=mux,
        min_concurrency=lo,
        max_concurrency=hi,
        buffer=buffer,
        buffer_perc=perc,
    )
    assert got == expected


# -- decide ----------------------------------------------------------------------------------

# (id, knobs, load, current target, now, expected (target, stop, recheck_at))
DECIDE = [
    # Scaling up past waiting requests.
    ("up-now-without-delay", {}, AppLoad(1, 100.0), 0, 100.0, (1, (), None)),
    ("up-to-all-waiting", {}, AppLoad(3, 100.0), 0, 100.0, (3, (), None)),
    ("up-clamped-to-max", {"max_concurrency": 2}, AppLoad(5, 100.0), 0, 100.0, (2, (), None)),
    ("up-by-multiplexing", {"max_multiplexing": 4}, AppLoad(5, 100.0), 0, 100.0, (2, (), None)),
    ("up-with-buffer", {"concurrency_buffer": 1}, AppLoad(1, 100.0), 0, 100.0, (2, (), None)),
    ("delay-not-yet", {"scaling_delay": 5}, AppLoad(1, 100.0), 0, 103.0, (0, (), 105.0)),
    ("delay-just-begun", {"scaling_delay": 5}, AppLoad(1, 100.0), 0, 100.0, (0, (), 105.0)),
    ("delay-reached", {"scaling_delay": 5}, AppLoad(1, 100.0), 0, 105.0, (1, (), None)),
    ("delay-passed", {"scaling_delay": 5}, AppLoad(1, 100.0), 0, 110.0, (1, (), None)),
    (
        "delay-keeps-in-flight-runners",
        {"scaling_delay": 5},
        AppLoad(2, 100.0, (busy("r1"),)),
        1,
        101.0,
        (1, (), 105.0),
    ),
    (
        "delay-covers-in-flight-above-target",
        {"scaling_delay": 5},
        AppLoad(1, 100.0, (busy("r1"), busy("r2"))),
        1,
        101.0,
        (2, (), 105.0),
    ),
    (
        "delay-then-all",
        {"scaling_delay": 5},
        AppLoad(2, 100.0, (busy("r1"),)),
        1,
        106.0,
        (3, (), None),
    ),
    (
        "delay-from-oldest-wait",
        {"scaling_delay": 5},
        AppLoad(2, 90.0),
        0,
        96.0,
        (2, (), None),
    ),
    # Warm runners without any waiting request.
    ("min-raises-target", {"min_concurrency": 2}, AppLoad(), 0, 0.0, (2, (), None)),
    (
        "min-ignores-scaling-delay",
        {"min_concurrency": 2, "scaling_delay": 30},
        AppLoad(),
        0,
        0.0,
        (2, (), None),
    ),
    ("buffer-raises-target", {"concurrency_buffer": 1}, AppLoad(), 0, 0.0, (1, (), None)),
    ("steady", {}, AppLoad(0, None, (busy("r1"),)), 1, 500.0, (1, (), None)),
    ("nothing-at-all", {}, AppLoad(), 0, 500.0, (0, (), None)),
    # Stopping idle runners after keep_alive.
    ("idle-not-yet-expired", {}, AppLoad(0, None, (idle("r1", 100.0),)), 1, 150.0, (1, (), 160.0)),
    (
        "idle-expires-at-keep-alive",
        {},
        AppLoad(0, None, (idle("r1", 100.0),)),
        1,
        160.0,
        (0, ("r1",), None),
    ),
    ("idle-long-expired", {}, AppLoad(0, None, (idle("r1", 100.0),)), 1, 900.0, (0, ("r1",), None)),
    (
        "keep-alive-zero-stops-at-once",
        {"keep_alive": 0},
        AppLoad(0, None, (idle("r1", 100.0),)),
        1,
        100.0,
        (0, ("r1",), None),
    ),
    (
        "oldest-idle-first",
        {"min_concurrency": 1},
        AppLoad(0, None, (idle("r1", 120.0), idle("r2", 100.0))),
        2,
        500.0,
        (1, ("r2",), None),
    ),
    (
        "never-a-busy-runner",
        {"max_concurrency": 3},
        AppLoad(0, None, (busy("r1"), idle("r2", 0.0), busy("r3"))),
        3,
        500.0,
        (2, ("r2",), None),
    ),
    (
        "unroutable-extra-dropped-with-no-demand",
        {"max_concurrency": 3},
        AppLoad(0, None, (busy("r1"), idle("r2", 0.0))),
        3,
        500.0,
        (1, ("r2",), None),
    ),
    (
        "failed-start-no-demand-scales-to-zero",
        {},
        AppLoad(0, None, ()),
        1,
        500.0,
        (0, (), None),
    ),
    (
        "starting-runner-kept-while-a-request-waits",
        {},
        AppLoad(1, 499.0, ()),
        1,
        500.0,
        (1, (), None),
    ),
    (
        "busy-runners-only",
        {"max_concurrency": 3},
        AppLoad(0, None, (busy("r1"), busy("r2"), busy("r3"))),
        3,
        500.0,
        (3, (), None),
    ),
    (
        "never-below-min",
        {"min_concurrency": 1},
        AppLoad(0, None, (idle("r1", 10.0), idle("r2", 20.0), idle("r3", 30.0))),
        3,
        500.0,
        (1, ("r1", "r2"), None),
    ),
    (
        "never-below-demand",
        {"max_multiplexing": 4},
        AppLoad(0, None, (busy("r1", 3), idle("r2", 0.0), idle("r3", 0.0))),
        3,
        500.0,
        (1, ("r2", "r3"), None),
    ),
    (
        "never-below-waiting-demand",
        {"scaling_delay": 5},
        AppLoad(1, 499.0, (idle("r1", 0.0), idle("r2", 0.0))),
        2,
        500.0,
        (1, ("r1",), None),
    ),
    (
        "recheck-when-next-idle-expires",
        {},
        AppLoad(0, None, (idle("r1", 150.0), idle("r2", 90.0))),
        2,
        200.0,
        (1, ("r2",), 210.0),
    ),
    (
        "no-recheck-when-enough-stopped",
        {"min_concurrency": 1},
        AppLoad(0, None, (idle("r1", 150.0), idle("r2", 90.0))),
        2,
        200.0,
        (1, ("r2",), None),
    ),
    (
        "idle-since-clock-origin",
        {},
        AppLoad(0, None, (idle("r1", 0.0),)),
        1,
        10.0,
        (1, (), 60.0),
    ),
    (
        "recheck-at-earliest-expiry",
        {"keep_alive": 10},
        AppLoad(0, None, (idle("r1", 195.0), idle("r2", 192.0))),
        2,
        200.0,
        (2, (), 202.0),
    ),
]


@pytest.mark.parametrize(
    ("knobs", "load", "target", "now", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in DECIDE],
)
def test_decide(
    knobs: dict[str, Any],
    load: AppLoad,
    target: int,
    now: float,
    expected: tuple[int, tuple[str, ...], float | None],
) -> None:
    """decide() scales up after scaling_delay, keeps warm runners, stops expired idle ones."""
    decision = decide(spec(**knobs), load, target, now)
    assert isinstance(decision, Decision)
    assert (decision.target, decision.stop, decision.recheck_at) == expected


def test_scale_up_waits_exactly_scaling_delay() -> None:
    """Across a clock sweep, the target rises at oldest_wait + scaling_delay and not before."""
    load = AppLoad(waiting=1, oldest_wait_since=50.0)
    targets = {now: decide(spec(scaling_delay=2), load, 0, now).target for now in (50, 51, 52, 53)}
    assert targets == {50: 0, 51: 0, 52: 1, 53: 1}


def test_app_load_counts_in_flight() -> None:
    """AppLoad.in_flight is the sum over its runners."""
    assert AppLoad(runners=(busy("a", 2), idle("b", 0.0), busy("c", 3))).in_flight == 5
