"""The seams between the control plane and whatever runs runners.

``Backend`` starts and stops runners; ``Discovery`` says which are healthy. The router and the
scheduler see only these, so the local and cluster paths share everything above them.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from yurt.spec import AppSpec


class RunnerState(enum.StrEnum):
    """Where a runner is in its life."""

    PENDING = "PENDING"  # started, port not open yet
    SETUP = "SETUP"  # port open, setup() running
    IDLE = "IDLE"  # ready, no request in flight
    RUNNING = "RUNNING"  # ready, serving
    DRAINING = "DRAINING"  # told to stop, finishing in-flight work
    TERMINATED = "TERMINATED"
    CRASH_BACKOFF = "CRASH_BACKOFF"  # failed before ready; the next start waits


@dataclass(frozen=True, slots=True)
class RunnerEndpoint:
    """Where a healthy runner answers."""

    runner_id: str
    host: str
    port: int
    # What the router shows the runner on every call (``yurt.runner.token``); "": none asked.
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class RunnerView:
    """A runner as a backend lists it."""

    runner_id: str
    app_id: str
    state: RunnerState
    host: str
    port: int
    pid: int | None
    started_at: float
    detail: str = ""

    @classmethod
    def backoff(cls, app_id: str, until: float, why: str) -> RunnerView:
        """The entry a backend lists while an app backs off after failed starts."""
        return cls("backoff", app_id, RunnerState.CRASH_BACKOFF, "", 0, None, until, why)


@dataclass(frozen=True, slots=True)
class StartFailure:
    """A runner that ended before it became ready, and why (shown to waiting callers)."""

    app_id: str
    runner_id: str
    error_type: str  # "startup_timeout" | "runner_scheduling_failure" | "placement_failed"
    detail: str
    # Nothing can start a runner until something outside changes (a cluster without the GPU):
    # every waiting request fails now, not after several failures in a row.
    final: bool = False


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """Runners a backend cannot place now, and why (shown in ``/_yurt/apps``)."""

    detail: str
    final: bool  # nothing fits until the cluster changes: new requests fail at once


FailureListener = Callable[[StartFailure], None]
# (app id, runner id) of a runner the backend was asked to stop and that stays after all.
KeepListener = Callable[[str, str], None]


class Backend(Protocol):
    """Runs runners for app revisions."""

    async def start(self) -> None:
        """Begin managing runners."""

    async def stop(self, grace: float | None = None) -> None:
        """Stop every runner this backend started and wait for them."""

    async def ensure_app(self, app_id: str, spec: AppSpec, payload: Path) -> None:
        """Make ``app_id`` known with this spec and payload (idempotent)."""

    async def set_target(self, app_id: str, count: int) -> None:
        """Keep ``count`` runners of the app alive (starting or ready)."""

    def target(self, app_id: str) -> int:
        """The runner count last asked for."""

    async def roll(self, app_id: str) -> None:
        """Replace the app's runners with runners of the revision ``ensure_app`` gave last."""

    async def remove_app(self, app_id: str) -> None:
        """Stop every runner of the app and forget it (an undeploy); unknown apps are fine.

        Each runner stops as it would when scaled down, within its grace period. Raises a
        ``ClusterError`` when the cluster refused: the app is then kept as it was, and the
        call may be made again.
        """

    async def stop_runner(self, app_id: str, runner_id: str, *, reason: str, replace: bool) -> None:
        """Drain and stop one runner; ``replace`` keeps the target, else it drops by one."""

    def pick_stops(self, app_id: str, idle: Sequence[str]) -> list[str]:
        """Which of ``idle`` (runners nobody needs, the first most) to stop, in order.

        A backend that can stop any runner returns ``idle`` as it is. One that decides for
        itself which runner goes when the count drops (Nomad stops the highest allocation
        index) returns only those it would stop that are in ``idle``, from the first it would
        stop, so that a busy runner is never the one to go; the scheduler retires each from
        routing, then calls ``stop_runner(replace=False)`` for it.
        """

    def runners(self, app_id: str) -> list[RunnerView]:
        """The app's runners, live ones and those in crash backoff."""

    def unplaced(self, app_id: str) -> Unplaceable | None:
        """Why runners the app needs cannot be placed now; None when nothing stops them."""

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Be told when a runner fails before it became ready."""

    def add_keep_listener(self, listener: KeepListener) -> None:
        """Be told when a runner ``stop_runner`` was asked to stop stays after all.

        A cluster may take a stop later (a deferred scale) and then refuse it, or a raise may
        overtake a lowering; the router routes to such a runner again.
        """


class Discovery(Protocol):
    """Which runners of an app are healthy now, and when that changes."""

    def healthy(self, app_id: str) -> list[RunnerEndpoint]:
        """The healthy runners of an app, now."""

    def watch(self, app_id: str) -> AsyncIterator[list[RunnerEndpoint]]:
        """Yield the healthy set at once and then each time it changes."""
