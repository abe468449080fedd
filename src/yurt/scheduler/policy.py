"""The scaling policy: pure functions over a snapshot of an app's load. No I/O, no clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from yurt.spec import AppSpec


def desired_runners(
    demand: int,
    *,
    max_multiplexing: int,
    min_concurrency: int,
    max_concurrency: int,
    buffer: int = 0,
    buffer_perc: int = 0,
) -> int:
    """clamp(ceil(demand / max_multiplexing) + max(buffer, buffer_perc% of that), min, max).

    ``buffer_perc`` is taken of the runners the demand needs, so that both buffers count runners.
    """
    needed = math.ceil(demand / max_multiplexing)
    extra = max(buffer, math.ceil(needed * buffer_perc / 100))
    return max(min_concurrency, min(max_concurrency, needed + extra))


@dataclass(frozen=True, slots=True)
class RunnerLoad:
    """One routable runner as the router sees it."""

    runner_id: str
    in_flight: int
    idle_since: float | None  # when it last became idle; None while serving


@dataclass(frozen=True, slots=True)
class AppLoad:
    """An app's load at one instant."""

    waiting: int = 0
    oldest_wait_since: float | None = None
    runners: tuple[RunnerLoad, ...] = ()

    @property
    def in_flight(self) -> int:
        """Requests being served now."""
        return sum(r.in_flight for r in self.runners)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do: the new target, which idle runners to stop, and when to look again."""

    target: int
    stop: tuple[str, ...] = ()
    recheck_at: float | None = None


def decide(spec: AppSpec, load: AppLoad, target: int, now: float) -> Decision:
    """Scale up past waiting requests after scaling_delay; stop runners idle for keep_alive.

    With nobody waiting, runners that the target counts but that are not routable (starting,
    or failing to start) are no longer asked for: an app whose setup fails must not restart
    for ever with no demand.
    """

    def want(demand: int) -> int:
        return desired_runners(
            demand,
            max_multiplexing=spec.max_multiplexing,
            min_concurrency=spec.min_concurrency,
            max_concurrency=spec.max_concurrency,
            buffer=spec.concurrency_buffer,
            buffer_perc=spec.concurrency_buffer_perc,
        )

    with_waiting = want(load.in_flight + load.waiting)
    if with_waiting > target:
        waited_since = load.oldest_wait_since if load.oldest_wait_since is not None else now
        due = waited_since + spec.scaling_delay
        if load.waiting == 0 or now >= due:
            return Decision(target=with_waiting)
        # Before the delay has passed only the load already in flight counts.
        return Decision(target=max(target, want(load.in_flight)), recheck_at=due)
    if with_waiting >= target:
        return Decision(target=target)
    idle = sorted(
        (r for r in load.runners if r.in_flight == 0 and r.idle_since is not None),
        key=lambda r: r.idle_since or 0.0,
    )
    # ``is None``, not ``or``: a runner idle since t=0.0 (a clock's origin) is idle, not new.
    expired = [
        r for r in idle if r.idle_since is not None and now - r.idle_since >= spec.keep_alive
    ]
    stop = tuple(r.runner_id for r in expired[: target - with_waiting])
    recheck = None
    if len(stop) < target - with_waiting and len(expired) < len(idle):
        next_since = idle[len(expired)].idle_since
        recheck = (now if next_since is None else next_since) + spec.keep_alive
    unroutable = max(0, target - len(load.runners))
    drop = min(unroutable, target - len(stop) - with_waiting) if load.waiting == 0 else 0
    return Decision(target=target - len(stop) - drop, stop=stop, recheck_at=recheck)
