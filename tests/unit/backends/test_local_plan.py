"""The local backend's planner, step by step: fills, scale downs, the surge redeploy and the GPU
hand-over, with the runners' lives played by the test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from yurt.backends.gpus import GpuAllocator
from yurt.backends.local_plan import (
    LIVE,
    Action,
    Phase,
    Start,
    Stop,
    StopReason,
    WaitGpus,
    WakeIn,
    Wants,
    after_exit,
    move,
    outdated,
    plan,
    stopped_phase,
)
from yurt.gpus import GpuInfo

H100 = "NVIDIA H100 80GB HBM3"
_clock = itertools.count(1)


@dataclass
class Seen:
    """A runner as the planner reads it."""

    runner_id: str
    phase: Phase = Phase.STARTING
    generation: int = 0
    stopped_in: int | None = None
    started_at: float = field(default_factory=lambda: float(next(_clock)))

    def stop(self, generation: int, *, timed_out: bool = False) -> None:
        self.phase = move(self.phase, stopped_phase(self.phase, timed_out=timed_out))
        self.stopped_in = generation


@dataclass
class App:
    """An app's runners and, for a GPU app, how many runners its GPUs hold."""

    target: int
    gpus: int | None = None  # None: a CPU app
    runners: list[Seen] = field(default_factory=list)
    started: int = 0
    generation: int = 0  # one more at each rollout

    def room(self) -> int | None:
        """Free GPUs: a runner holds its GPUs until its process has exited."""
        if self.gpus is None:
            return None
        return self.gpus - sum(r.phase is not Phase.EXITED for r in self.runners)

    def plan(self, *, backoff_until: float = 0.0, replace_now: bool = False) -> list[Action]:
        """Plan, and carry the starts and stops out as the backend would."""
        wants = Wants(self.target, backoff_until, self.generation)
        actions = plan(wants, self.runners, self.room(), now=0.0, replace_now=replace_now)
        for action in actions:
            if isinstance(action, Start):
                self.started += 1
                self.runners.append(Seen(f"n{self.started}", generation=self.generation))
            elif isinstance(action, Stop):
                self.get(action.runner_id).stop(self.generation)
        return actions

    def get(self, runner_id: str) -> Seen:
        return next(r for r in self.runners if r.runner_id == runner_id)

    def ready(self, runner_id: str) -> None:
        runner = self.get(runner_id)
        runner.phase = move(runner.phase, Phase.READY)

    def exit(self, runner_id: str) -> None:
        runner = self.get(runner_id)
        runner.phase = move(runner.phase, Phase.EXITED)
        self.runners.remove(runner)

    def roll(self) -> None:
        self.generation += 1

    def ids(self, *phases: Phase, old: bool | None = None) -> list[str]:
        return [
            r.runner_id
            for r in self.runners
            if r.phase in phases and (old is None or outdated(r, self.generation) == old)
        ]


def serving(target: int, gpus: int | None = None) -> App:
    """An app with ``target`` ready runners, o1, o2, ..."""
    app = App(target, gpus, [Seen(f"o{i + 1}", Phase.READY) for i in range(target)])
    assert app.plan() == []
    return app


def stops(actions: list[Action]) -> list[tuple[str, StopReason]]:
    return [(a.runner_id, a.reason) for a in actions if isinstance(a, Stop)]


def test_a_fill_starts_what_is_missing() -> None:
    """Target 3 with one runner: two starts, nothing stopped."""
    app = App(3, runners=[Seen("a", Phase.READY)])
    assert app.plan() == [Start(), Start()]


def test_a_backoff_waits_instead_of_starting() -> None:
    """During a backoff nothing starts: plan again when it ends."""
    app = App(1)
    assert plan(Wants(1, backoff_until=7.5), app.runners, None, now=5.0) == [WakeIn(2.5)]


def test_a_ready_runner_that_died_is_replaced_through_the_backoff() -> None:
    """``replace_now`` starts one runner at once; the rest wait for the backoff."""
    app = App(2)
    assert app.plan(backoff_until=1.0, replace_now=True) == [WakeIn(1.0), Start()]


def test_scale_down_stops_runners_that_serve_no_one_first() -> None:
    """Not-ready runners go first, the newest first; then the newest ready ones."""
    app = App(1, runners=[Seen("old", Phase.READY), Seen("setup", Phase.SETUP), Seen("new")])
    assert stops(app.plan()) == [
        ("new", StopReason.SCALE_DOWN),
        ("setup", StopReason.SCALE_DOWN),
    ]


def test_gpus_too_few_start_what_fits_and_say_the_rest_wait() -> None:
    """Target 3 on two GPUs: two start, the third waits (and no runner is stopped for it)."""
    app = App(3, gpus=2)
    assert app.plan() == [Start(), Start(), WaitGpus()]
    assert app.plan() == [WaitGpus()]


def test_a_rollout_keeps_old_runners_until_new_ones_are_ready() -> None:
    """CPU app: a redeploy starts new runners beside the old; each ready one retires one old."""
    app = serving(2)
    app.roll()
    assert app.plan() == [Start(), Start()]
    app.ready("n1")
    assert stops(app.plan()) == [("o1", StopReason.NEW_REVISION)]
    app.ready("n2")
    assert stops(app.plan()) == [("o2", StopReason.NEW_REVISION)]


def test_with_no_spare_gpu_old_runners_go_one_per_ready_new_one() -> None:
    """Two GPUs, two runners: a redeploy never leaves the app without a ready runner."""
    app = serving(2, gpus=2)
    app.roll()
    assert app.plan() == [WaitGpus(), Stop("o1", StopReason.NEW_REVISION)]
    assert app.plan() == [WaitGpus()]  # o1 gives its GPU up already
    app.exit("o1")  # its GPU is free: a new runner starts on it
    assert app.plan() == [Start(), WaitGpus()]
    # While it loads, the other old runner serves on.
    assert app.plan() == [WaitGpus()]
    assert app.ids(Phase.READY) == ["o2"]
    app.ready("n1")
    # Now the second old runner makes room, and the new one serves meanwhile.
    assert app.plan() == [WaitGpus(), Stop("o2", StopReason.NEW_REVISION)]
    assert app.ids(Phase.READY) == ["n1"]
    app.exit("o2")
    assert app.plan() == [Start()]
    assert app.ids(*LIVE, old=False) == ["n1", "n2"]


def test_a_second_redeploy_drops_runners_that_were_not_ready_first() -> None:
    """Redeployed again before the last revision was ready: as each newest runner is ready,
    the old runners serving nobody go first, so as many runners as before stay ready."""
    app = serving(2)
    app.roll()  # revision 2 starts
    assert app.plan() == [Start(), Start()]
    app.roll()  # revision 3 starts before revision 2 is ready
    # Four old runners for a target of two: revision 2's, serving no one, go at once.
    assert app.plan() == [
        Start(),
        Start(),
        Stop("n1", StopReason.NEW_REVISION),
        Stop("n2", StopReason.NEW_REVISION),
    ]
    app.ready("n3")
    assert stops(app.plan()) == [("o1", StopReason.NEW_REVISION)]
    assert app.ids(Phase.READY) == ["o2", "n3"]


def test_an_old_runner_that_never_started_puts_nothing_in_backoff() -> None:
    """A superseded runner failing to start says nothing about the current revision."""
    exit = after_exit(Seen("old", Phase.SETUP), [], Wants(1, generation=1), 0)
    assert not exit.failed_start
    assert after_exit(Seen("new", Phase.SETUP), [], Wants(1), 0).failed_start


def test_a_rollback_starts_afresh_beside_runners_of_the_revision_it_returns_to() -> None:
    """Each rollout is a generation of its own, whatever it deploys: rolled back to the
    revision the first runners still serve, those stay old and are replaced as well (as the
    same payload deployed again with another spec replaces every runner)."""
    app = serving(2)
    app.roll()  # revision 2
    assert app.plan() == [Start(), Start()]
    app.roll()  # back to revision 1: o1 and o2 serve it, yet started two rollouts ago
    assert app.ids(*LIVE, old=True) == ["o1", "o2", "n1", "n2"]
    assert app.plan()[:2] == [Start(), Start()]
    app.ready("n3")
    assert stops(app.plan()) == [("o1", StopReason.NEW_REVISION)]


def test_a_runner_leaving_before_a_rollout_is_no_old_runner_giving_its_gpu_up() -> None:
    """Two GPUs: a runner scaled down before a redeploy still holds its GPU as it drains; it
    stays of the revision it was stopped in, so the old runner that serves still makes room
    (it does not wait for the drain)."""
    app = serving(2, gpus=2)
    app.get("o2").stop(app.generation)  # drains, holding its GPU
    app.target = 1
    app.roll()
    assert app.plan() == [WaitGpus(), Stop("o1", StopReason.NEW_REVISION)]
    assert app.ids(Phase.DRAINING, old=False) == ["o2"]


def test_a_start_that_timed_out_before_a_rollout_is_still_a_failed_start() -> None:
    """A runner of the current revision not ready in time, exiting only after a redeploy,
    still counts as a failed start of the app (it backs off), as it was one when stopped."""
    runner = Seen("late", Phase.SETUP)
    runner.stop(0, timed_out=True)
    exit = after_exit(runner, [], Wants(1, generation=1), 0)
    assert exit.failed_start and exit.timed_out


@pytest.mark.parametrize(
    ("phase", "failed", "timed_out"),
    [
        (Phase.STARTING, True, False),
        (Phase.TIMED_OUT, True, True),
        (Phase.STOPPING, False, False),
        (Phase.DRAINING, False, False),
    ],
)
def test_what_an_exit_before_or_after_a_stop_means(
    phase: Phase, failed: bool, timed_out: bool
) -> None:
    """A crash before ready or a startup timeout is a failed start; a stop is not."""
    exit = after_exit(Seen("r", phase), [], Wants(1), 0)
    assert (exit.failed_start, exit.timed_out) == (failed, timed_out)
    assert not exit.replace_now and not exit.drop_target


def test_a_ready_runner_that_died_is_replaced_while_min_concurrency_needs_it() -> None:
    """Below min_concurrency the place is filled at once; above, it leaves the target."""
    other = Seen("other", Phase.READY)
    assert after_exit(Seen("r", Phase.READY), [other], Wants(2), 2).replace_now
    kept = after_exit(Seen("r", Phase.READY), [other], Wants(2), 0)
    assert kept.drop_target and not kept.replace_now
    # The target is met without it: nothing would start, so the place is not given up.
    assert after_exit(Seen("r", Phase.READY), [other], Wants(1), 0).replace_now


def test_a_runner_moves_only_along_its_lifecycle() -> None:
    """An exited runner stays exited; a ready one cannot go back to setup."""
    with pytest.raises(ValueError, match="EXITED to READY"):
        move(Phase.EXITED, Phase.READY)
    with pytest.raises(ValueError, match="READY to SETUP"):
        move(Phase.READY, Phase.SETUP)
    assert stopped_phase(Phase.READY) is Phase.DRAINING
    assert stopped_phase(Phase.SETUP, timed_out=True) is Phase.TIMED_OUT


def test_gpu_room_counts_runners_one_after_another() -> None:
    """Three free H100s hold one two-GPU runner, or three one-GPU runners."""
    gpus = GpuAllocator([GpuInfo(i, H100, f"GPU-{i}", 81559) for i in range(3)])
    assert gpus.room(["GPU-H100"], 2) == 1
    assert gpus.room(["GPU-H100"], 1) == 3
    assert gpus.acquire("r", ["GPU-H100"], 1) is not None
    assert gpus.room(["GPU-H100"], 2) == 1
