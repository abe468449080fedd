"""Typed configuration. The only module that reads environment variables."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    public_url: str | None = Field(
        default=None,
        description="base of the URLs the queue returns; None: the scheme and Host of each request",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain: serve https")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


class WebhookConfig(_Frozen):
    """Delivery of completion webhooks: bounded retries with exponential backoff."""

    max_attempts: int = Field(default=10, ge=1, description="deliveries tried before giving up")
    # 15 s doubling to a 1 h cap: ten attempts span about two hours, as fal's redelivery does.
    first_delay: float = Field(default=15.0, ge=0, description="seconds before the first retry")
    max_delay: float = Field(default=3600.0, ge=0, description="cap on the delay between tries")
    timeout: float = Field(default=15.0, gt=0, description="seconds one delivery may take")
    secret: str | None = Field(
        default=None,
        description="HMAC key; None: generated once and kept in the data dir",
    )


class QueueConfig(_Frozen):
    """The durable queue behind ``/queue/``."""

    max_attempts: int = Field(default=10, ge=1, description="attempts per queued request")
    retention: float = Field(
        default=24 * 3600.0, gt=0, description="seconds completed requests and results are kept"
    )
    purge_interval: float = Field(default=300.0, gt=0, description="seconds between purges")
    max_queued: int = Field(
        default=100_000, ge=1, description="requests one app may have waiting; more get 429"
    )
    max_queued_bytes: int = Field(
        default=1024 * MIB,
        ge=1,
        description="bodies of one app's unfinished requests, held in memory; more get 429",
    )
    max_start_failures: int = Field(
        default=3,
        ge=1,
        description="runner starts failing in a row, with none up, before queued requests fail",
    )
    durability: Literal["normal", "full"] = Field(
        default="normal",
        description="SQLite synchronous mode: normal survives a killed router, full also "
        "a power loss",
    )
    webhooks: WebhookConfig = WebhookConfig()


class ServerConfig(_Frozen):
    """Everything ``yurt run`` / ``yurt server`` needs."""

    data_dir: Path
    event_loop: LoopName = "auto"
    router: RouterConfig = RouterConfig()
    queue: QueueConfig = QueueConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    local: LocalBackendConfig = LocalBackendConfig()


def default_data_dir() -> Path:
    """``$YURT_DATA_DIR``, else ``$XDG_DATA_HOME/yurt``, else ``~/.local/share/yurt``."""
    if env := os.environ.get("YURT_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "yurt"
