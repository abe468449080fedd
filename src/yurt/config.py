"""Typed configuration. The only module that reads environment variables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from yurt.aio import LoopName

MIB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HealthConfig(_Frozen):
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


class BackoffConfig(_Frozen):
    """Crash backoff: each next start ``step`` later, capped at ``cap``, reset on a ready runner."""

    step: float = Field(default=30.0, ge=0)
    cap: float = Field(default=600.0, ge=0)


class LocalBackendConfig(_Frozen):
    """The embedded backend: runners as subprocesses of this process."""

    python: str = Field(default_factory=lambda: sys.executable)
    host: str = "127.0.0.1"
    health: HealthConfig = HealthConfig()
    backoff: BackoffConfig = BackoffConfig()
    runner_loop: LoopName = Field(default="auto", description="event loop of the runners")
    kill_after: float = Field(
        default=5.0, ge=0, description="extra seconds after the grace period before SIGKILL"
    )


class SchedulerConfig(_Frozen):
    """The reconcile loop."""

    interval: float = Field(default=0.5, gt=0, description="seconds between reconcile passes")


class RouterConfig(_Frozen):
    """The router's HTTP face."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    owner: str = "default"
    max_body_size: int = Field(default=10 * MIB, ge=0)
    dispatch_timeout: float | None = Field(
        default=None,
        gt=0,
        description="longest wait for a free runner; None: the app's startup_timeout plus 10 s",
    )
    access_log: bool = False
    keepalive_timeout: float = Field(
        default=75.0, gt=0, description="idle client connections close"
    )


class ServerConfig(_Frozen):
    """Everything ``yurt run`` / ``yurt server`` needs."""

    data_dir: Path
    event_loop: LoopName = "auto"
    router: RouterConfig = RouterConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    local: LocalBackendConfig = LocalBackendConfig()


def default_data_dir() -> Path:
    """``$YURT_DATA_DIR``, else ``$XDG_DATA_HOME/yurt``, else ``~/.local/share/yurt``."""
    if env := os.environ.get("YURT_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "yurt"
