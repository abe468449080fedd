"""How long a stopping runner gives teardown(): what is left before its supervisor's SIGKILL."""

from __future__ import annotations

from yurt.backends.nomad.jobspec import KILL_SLACK_S
from yurt.config import LocalBackendConfig
from yurt.runner.server import teardown_budget
from yurt.spec import TEARDOWN_SLACK_S


def test_teardown_gets_what_the_drain_left_of_grace_plus_slack() -> None:
    # Grace 30 s, the drain took 2 s: 30 + 5 - 2, less half a second for the exit.
    assert teardown_budget(100.0, 102.0, 30.0) == 32.5
    # A drain that used the whole grace leaves the slack, not another grace period.
    assert teardown_budget(100.0, 130.0, 30.0) == 4.5


def test_a_late_teardown_still_gets_a_moment() -> None:
    assert teardown_budget(100.0, 200.0, 30.0) == 0.5


def test_both_supervisors_kill_after_the_same_slack() -> None:
    """The budget is only right if the local backend and Nomad wait that long to SIGKILL."""
    assert LocalBackendConfig().kill_after == KILL_SLACK_S == TEARDOWN_SLACK_S
