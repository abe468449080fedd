"""The embedded backend's configuration (``[local]``) and the scheduler's (``[scheduler]``)."""

from __future__ import annotations

import re
import sys

from pydantic import Field, field_validator

from yurt.aio import LoopName
from yurt.backoff import capped_backoff
from yurt.config.base import CONFIG_ENV, Frozen
from yurt.spec import TEARDOWN_SLACK_S

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class HealthConfig(Frozen):
    """The local backend's HTTP health checker (an app's HealthCheck overrides the threshold)."""

    # 15 s: how often fal calls a declared health check.
    interval: float = Field(
        default=15.0, gt=0, description="seconds between checks of a ready runner"
    )
    timeout: float = Field(default=5.0, gt=0, description="seconds one check may take")
    failure_threshold: int = Field(
        default=3, ge=1, description="failures in a row that end a runner"
    )
    startup_poll: float = Field(default=0.01, gt=0, description="poll interval while starting")


class BackoffConfig(Frozen):
    """Crash backoff: ``step`` before the next start, doubling with each failure in a row up to
    ``cap``, reset on a ready runner."""

    step: float = Field(default=30.0, ge=0, description="seconds after the first failed start")
    cap: float = Field(default=600.0, ge=0, description="the longest wait between starts")

    def delay(self, failures: int) -> float:
        """Seconds before the next start after ``failures`` failed starts in a row."""
        return capped_backoff(failures, first=self.step, cap=self.cap)


class LocalBackendConfig(Frozen):
    """The embedded backend: runners as subprocesses of this process."""

    python: str = Field(default_factory=lambda: sys.executable, min_length=1)
    host: str = Field(default="127.0.0.1", min_length=1)
    health: HealthConfig = HealthConfig()
    backoff: BackoffConfig = BackoffConfig()
    runner_loop: LoopName = Field(default="auto", description="event loop of the runners")
    kill_after: float = Field(
        default=TEARDOWN_SLACK_S,
        ge=0,
        description="extra seconds after the grace period before SIGKILL",
    )
    gpus: str | None = Field(
        default=None,
        description="the GPUs runners may be given, as CUDA_VISIBLE_DEVICES lists them "
        "(indexes or UUIDs); None: every GPU NVML sees. yurt run and yurt server start from "
        "$CUDA_VISIBLE_DEVICES (``yurt.config.local_env``)",
    )
    pass_env: tuple[str, ...] = Field(
        default=(),
        description="more variables runners get from this environment, by name (an app's own "
        "keys, e.g. HF_TOKEN); runners get only PATH, HOME, locale, proxies, CUDA, the Python "
        "path and YURT_* variables otherwise",
    )

    @field_validator("pass_env")
    @classmethod
    def _not_ours(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in names if not _ENV_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"{bad} are not variable names (letters, digits, '_')")
        ours = sorted(n for n in names if n in CONFIG_ENV or n.startswith(("NOMAD_", "CONSUL_")))
        if ours:
            raise ValueError(
                f"{ours} configure yurt itself and never reach a runner; remove them (give an "
                "app a key of its own under another name)"
            )
        return names

    fork_runners: bool = Field(
        default=True,
        description="start runners by forking a warm template process per app environment "
        "(docs/cold-starts.md); false: each runner a fresh interpreter, as an App's own "
        "fork_runners = False asks for one app",
    )
    template_start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="seconds a template may take to import the runner and an app's preload "
        "before it is given up (runners start fresh meanwhile)",
    )

    console: bool = Field(
        default=False,
        description="also show each runner's output on this process's stderr, each line "
        "prefixed with the runner id (the log files in DATA_DIR/logs/ stay); "
        "yurt run turns it on unless --quiet",
    )


class SchedulerConfig(Frozen):
    """The reconcile loop."""

    interval: float = Field(default=0.5, gt=0, description="seconds between reconcile passes")
