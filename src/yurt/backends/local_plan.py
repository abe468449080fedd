"""The local backend's decisions, as pure functions over what it knows of an app's runners.

A runner's life is one ``Phase``, moved only along ``MOVES``; which revision it serves is the
app's ``generation`` it was started in, one more at each rollout (``outdated``). ``plan`` says
which runners to start and which to stop, and why, to meet an app's target: a fill, a scale
down, a surge rollout (each old runner serves until a new one is ready to take its place) and,
where GPUs are short, an old runner giving its GPUs up for a new one. ``after_exit`` says what
a runner's exit means: a failed start, a death to replace at once, or a place that leaves the
target. No clock, no processes, no I/O: the supervisor carries the actions out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from yurt.backends.base import RunnerState


class Phase(enum.Enum):
    """Where a local runner is in its life."""

    STARTING = "starting"  # being spawned, or spawned with its port not open yet
    SETUP = "setup"  # its port answers, setup() runs
    READY = "ready"  # passed its health check: serving
    STOPPING = "stopping"  # told to stop before it was ready: no failure
    TIMED_OUT = "timed_out"  # not ready within startup_timeout: a failed start
    DRAINING = "draining"  # told to stop after it was ready, finishing its requests
    EXITED = "exited"  # its process is gone (or never started)


# Each phase and the phases it may move to; nothing leaves EXITED.
MOVES: Mapping[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset(
        {Phase.SETUP, Phase.READY, Phase.STOPPING, Phase.TIMED_OUT, Phase.EXITED}
    ),
    Phase.SETUP: frozenset({Phase.READY, Phase.STOPPING, Phase.TIMED_OUT, Phase.EXITED}),
    Phase.READY: frozenset({Phase.DRAINING, Phase.EXITED}),
    Phase.STOPPING: frozenset({Phase.EXITED}),
    Phase.TIMED_OUT: frozenset({Phase.EXITED}),
    Phase.DRAINING: frozenset({Phase.EXITED}),
    Phase.EXITED: frozenset(),
}

LIVE = frozenset({Phase.STARTING, Phase.SETUP, Phase.READY})
STOPPED = frozenset({Phase.STOPPING, Phase.TIMED_OUT, Phase.DRAINING})

# The state each phase shows through ``Backend.runners``.
SHOWN: Mapping[Phase, RunnerState] = {
    Phase.STARTING: RunnerState.PENDING,
    Phase.SETUP: RunnerState.SETUP,
    Phase.READY: RunnerState.IDLE,
    Phase.STOPPING: RunnerState.DRAINING,
    Phase.TIMED_OUT: RunnerState.DRAINING,
    Phase.DRAINING: RunnerState.DRAINING,
    Phase.EXITED: RunnerState.TERMINATED,
}


def move(phase: Phase, to: Phase) -> Phase:
    """``to``, where a runner in ``phase`` may go there; ValueError otherwise."""
    if to not in MOVES[phase]:
        raise ValueError(f"a runner cannot move from {phase.name} to {to.name}")
    return to


def stopped_phase(phase: Phase, *, timed_out: bool = False) -> Phase:
    """The phase a live runner moves to when it is told to stop."""
    if phase is Phase.READY:
        return Phase.DRAINING
    return Phase.TIMED_OUT if timed_out else Phase.STOPPING


class StopReason(enum.StrEnum):
    """Why the backend itself stops a runner (the scheduler's stops give their own reason)."""

    SCALE_DOWN = "scale_down"
    NEW_REVISION = "new_revision"
    STARTUP_TIMEOUT = "startup_timeout"
    HEALTH_CHECK_FAILED = "health_check_failed"
    UNDEPLOYED = "undeployed"
    SHUTDOWN = "shutdown"


class RunnerFacts(Protocol):
    """What the planner reads of a runner."""

    @property
    def runner_id(self) -> str: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def generation(self) -> int: ...  # the app's generation it was started in
    @property
    def stopped_in(self) -> int | None: ...  # the app's generation when told to stop
    @property
    def started_at(self) -> float: ...


def outdated(runner: RunnerFacts, generation: int) -> bool:
    """Whether ``runner`` serves an earlier revision than the app's ``generation``: it then
    serves until a runner of the current one takes its place.

    A runner told to stop is judged by the generation it was told to stop in: one that was
    leaving before a rollout (a scale down, a failed check, a startup timeout) stays of the
    revision it served, so that it neither counts as an old runner giving its GPUs up for a
    new one nor makes its failed start one of an earlier revision.
    """
    return runner.generation != (generation if runner.stopped_in is None else runner.stopped_in)


@dataclass(frozen=True, slots=True)
class Wants:
    """What the planner reads of an app."""

    target: int
    backoff_until: float = 0.0  # no start before this (monotonic seconds) after failed starts
    generation: int = 0  # one more at each rollout: runners of an earlier one are outdated


@dataclass(frozen=True, slots=True)
class Start:
    """Start one runner of the app's current revision (its GPUs are free)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Tell a runner to stop, and why."""

    runner_id: str
    reason: StopReason


@dataclass(frozen=True, slots=True)
class WaitGpus:
    """A runner of the current revision cannot start: too few GPUs are free."""


@dataclass(frozen=True, slots=True)
class WakeIn:
    """Nothing may start before the backoff ends: plan again in ``seconds``."""

    seconds: float


Action = Start | Stop | WaitGpus | WakeIn


def first_to_go(runner: RunnerFacts) -> tuple[bool, float]:
    """Which old runner stops first: not ready yet (it serves no one), then the oldest."""
    return runner.phase is Phase.READY, runner.started_at


def gpu_room(free: int | None, wanted: int) -> int:
    """How many of ``wanted`` new runners may start: all, without GPUs (``free`` None)."""
    return wanted if free is None else max(0, min(wanted, free))


def plan(
    app: Wants,
    runners: Sequence[RunnerFacts],
    gpus: int | None,
    *,
    now: float,
    replace_now: bool = False,
) -> list[Action]:
    """The starts and stops that move ``runners`` towards ``app.target``.

    ``gpus`` is how many more runners of the app the free GPUs take (None: a CPU app).
    ``replace_now`` starts one runner even during a backoff (a ready runner died). Runners of
    an earlier revision do not count towards the target; they stop as runners of the current
    one become ready, or one at a time to give their GPUs to one.
    """
    live = [r for r in runners if r.phase in LIVE]
    current = [r for r in live if not outdated(r, app.generation)]
    actions: list[Action] = []
    starts, short = 0, False
    missing = app.target - len(current)
    if missing > 0 and replace_now:
        starts = gpu_room(gpus, 1)
        short, missing = starts == 0, missing - starts
    if missing > 0 and not short:
        if app.backoff_until > now:
            actions.append(WakeIn(app.backoff_until - now))
        else:
            more = gpu_room(None if gpus is None else gpus - starts, missing)
            starts, short = starts + more, more < missing
    elif missing < 0:
        # Not-ready runners first (newest first): they serve no one yet.
        extra = sorted(current, key=lambda r: (r.phase is Phase.READY, -r.started_at))
        actions += [Stop(r.runner_id, StopReason.SCALE_DOWN) for r in extra[:-missing]]
    actions += [Start()] * starts
    if short:
        actions.append(WaitGpus())
    if short and starts == 0:
        actions += _make_room(runners, app.generation)
    return actions + _rollout(app, runners, actions)


def _make_room(runners: Sequence[RunnerFacts], generation: int) -> list[Action]:
    """No GPUs for a runner of the current revision: an old runner gives its GPUs up, one at
    a time (its exit brings the next plan)."""
    old = [r for r in runners if outdated(r, generation)]
    if any(r.phase in STOPPED for r in old):
        return []  # one is giving its GPUs up already
    starting = (Phase.STARTING, Phase.SETUP)
    if any(r.phase in starting and not outdated(r, generation) for r in runners):
        return []  # the last one made room for is still starting: one old runner per new one
    old = sorted((r for r in old if r.phase in LIVE), key=first_to_go)
    return [Stop(old[0].runner_id, StopReason.NEW_REVISION)] if old else []


def _rollout(app: Wants, runners: Sequence[RunnerFacts], planned: Sequence[Action]) -> list[Action]:
    """Old runners that may stop now: as many as ready runners of the current revision
    stand beyond the target."""
    stopping = {a.runner_id for a in planned if isinstance(a, Stop)}
    live = [r for r in runners if r.phase in LIVE and r.runner_id not in stopping]
    old = sorted((r for r in live if outdated(r, app.generation)), key=first_to_go)
    ready = sum(r.phase is Phase.READY and not outdated(r, app.generation) for r in live)
    go = old[: max(0, ready + len(old) - app.target)]
    return [Stop(r.runner_id, StopReason.NEW_REVISION) for r in go]


@dataclass(frozen=True, slots=True)
class Exit:
    """What a runner's exit means."""

    failed_start: bool  # it ended before it was ready: the app backs off
    timed_out: bool  # ...because it was not ready within startup_timeout
    replace_now: bool  # it died while ready and its place is filled at once
    drop_target: bool  # it died while ready and its place leaves the target


def replaced_at_once(others: Sequence[RunnerFacts], app: Wants, min_concurrency: int) -> bool:
    """Whether a ready runner that died is replaced at once, even while the app backs off:
    while ``min_concurrency`` needs it (or the target is met without it: nothing starts).
    ``others`` are the app's other runners."""
    live = sum(r.phase in LIVE and not outdated(r, app.generation) for r in others)
    return live < min_concurrency or app.target <= live


def after_exit(
    runner: RunnerFacts, others: Sequence[RunnerFacts], app: Wants, min_concurrency: int
) -> Exit:
    """What the exit of ``runner`` (in the phase it was in) means for its app."""
    failed = runner.phase in (Phase.STARTING, Phase.SETUP, Phase.TIMED_OUT)
    died = runner.phase is Phase.READY
    old = outdated(runner, app.generation)
    replace = died and (old or replaced_at_once(others, app, min_concurrency))
    return Exit(
        # A runner of an earlier revision that never started says nothing of the current one.
        failed_start=failed and not old,
        timed_out=runner.phase is Phase.TIMED_OUT,
        replace_now=replace,
        drop_target=died and not replace,
    )
