"""What the local backend keeps of an app and of each of its runners."""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from yurt.backends.local_plan import Phase, move
from yurt.backends.runnerlog import RunnerOutput
from yurt.backends.templates import ForkedProcess
from yurt.spec import AppSpec


@dataclass(eq=False)
class Runner:
    """One runner: its phase, and the process that plays it."""

    runner_id: str
    app_id: str
    port: int
    log_path: Path
    started_at: float
    phase: Phase = Phase.STARTING
    generation: int = 0  # the app's generation it was started in (``local_plan.outdated``)
    reason: str = ""  # why it was told to stop ("": it was not)
    stopped_in: int | None = None  # the app's generation when it was told to stop
    sock: socket.socket | None = None  # bound for the runner, closed here once it has it
    proc: asyncio.subprocess.Process | ForkedProcess | None = None  # forked: from a template
    output: RunnerOutput | None = None  # its stdout and stderr, once it runs
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Only the router, which gets it with the runner's endpoint, may call the runner.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def move(self, to: Phase) -> None:
        """The one way a runner's phase changes (``local_plan.MOVES``)."""
        self.phase = move(self.phase, to)

    def stop(self, to: Phase, reason: str, generation: int) -> None:
        """Told to stop, in the app's ``generation``: moved to ``to``, one of the stopped phases."""
        self.move(to)
        self.reason, self.stopped_in = reason, generation

    def close_socket(self) -> None:
        """Close the socket bound for the runner (it has its own copy, or never will)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass(eq=False)
class LocalApp:
    """One app: its revision, its target and its backoff after failed starts."""

    app_id: str
    spec: AppSpec
    payload: Path
    target: int = 0
    generation: int = 0  # one more at each rollout: runners started before are outdated
    failures: int = 0
    backoff_until: float = 0.0
    last_failure: str = ""
    runners: dict[str, Runner] = field(default_factory=dict)
    wakeup: asyncio.TimerHandle | None = None
