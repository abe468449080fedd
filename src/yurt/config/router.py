"""The router's face (``[router]``), its queue and webhooks (``[queue]``), API keys (``[keys]``)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from yurt.config.base import MIB, Frozen, base_url, url_segment


class RouterConfig(Frozen):
    """The router's HTTP face."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    owner: str = Field(default="default", description="owner of the apps `yurt run` serves")
    max_body_size: int = Field(default=10 * MIB, ge=0)
    dispatch_timeout: float | None = Field(
        default=None,
        gt=0,
        description="longest wait for a free runner; None: the app's startup_timeout plus 10 s",
    )
    access_log: bool = False
    public: bool = Field(
        default=False,
        description="listening beyond loopback with no API keys, serve every app to anyone "
        "(otherwise apps that are not public answer 401 until a key exists)",
    )
    keepalive_timeout: float = Field(
        default=75.0, gt=0, description="idle client connections close"
    )
    public_url: str | None = Field(
        default=None,
        description="base of the URLs the queue returns; None: the scheme and Host of each request",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain: serve https")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    # Slow clients, as Apache's mod_reqtimeout bounds them: a deadline for the head, and for a
    # body a deadline that each byte received pushes back by 1/min_body_rate seconds. Past
    # either, the request gets 408 and its connection closes.
    header_timeout: float = Field(
        default=20.0, gt=0, description="seconds a request's line and headers may take"
    )
    body_timeout: float = Field(
        default=20.0,
        gt=0,
        description="seconds a request body may take, plus one per min_body_rate bytes received",
    )
    min_body_rate: float = Field(
        default=500.0, gt=0, description="bytes per second a request body must keep up"
    )

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        # The first segment of every app id and URL of the apps it owns.
        return url_segment(value)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else base_url(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


# The most tries of one queued request or one webhook: beyond it a retry loop only hides a fault.
MAX_ATTEMPTS = 100


class WebhookConfig(Frozen):
    """Delivery of completion webhooks: bounded retries with exponential backoff."""

    max_attempts: int = Field(
        default=10, ge=1, le=MAX_ATTEMPTS, description="deliveries tried before giving up"
    )
    # 15 s doubling to a 1 h cap: ten attempts span about two hours, as fal's redelivery does.
    first_delay: float = Field(default=15.0, ge=0, description="seconds before the first retry")
    max_delay: float = Field(default=3600.0, ge=0, description="cap on the delay between tries")
    timeout: float = Field(default=15.0, gt=0, description="seconds one delivery may take")
    secret: str | None = Field(
        default=None,
        min_length=1,
        description="HMAC key; None: generated once and kept in the data dir",
    )


class QueueConfig(Frozen):
    """The durable queue behind ``/queue/``."""

    max_attempts: int = Field(
        default=10, ge=1, le=MAX_ATTEMPTS, description="attempts per queued request"
    )
    retry_backoff: float = Field(
        default=0.5,
        ge=0,
        description="seconds before retrying a request whose runner was kept (504, 429, "
        "X-Fal-Needs-Retry), doubling with each attempt; a runner that was stopped is "
        "retried elsewhere at once",
    )
    retry_backoff_max: float = Field(default=10.0, ge=0, description="the longest such wait")
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
    webhook_allow: tuple[str, ...] = Field(
        default=(),
        description="webhook destinations allowed although loopback, private, link-local, "
        "reserved or this host's: CIDRs or addresses ('10.0.0.0/8', '127.0.0.1') and host "
        "names ('hooks.internal', '*.svc.cluster.local'); the rest are refused",
    )

    @field_validator("webhook_allow")
    @classmethod
    def _allow_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [entry for entry in value if not _allow_entry(entry)]
        if bad:
            raise ValueError(f"{bad} are neither CIDRs, addresses nor host names")
        return value


_HOST_NAME = re.compile(r"(\*\.)?([a-z0-9_][a-z0-9_-]{0,62}\.)*[a-z0-9_][a-z0-9_-]{0,62}")


def _allow_entry(entry: str) -> bool:
    """Whether ``entry`` is a CIDR, an address, or a host name (``*.`` for its subdomains)."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return bool(_HOST_NAME.fullmatch(entry.lower().rstrip(".")))
    return True


class KeysConfig(Frozen):
    """API keys, who must show one, and what one key may ask for (``[keys]``)."""

    refresh: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="seconds between looks at the keys file: how long a key revoked by another "
        "router sharing the data dir may still work here",
    )
    rate: float | None = Field(
        default=None, gt=0, description="requests a second one key may make; None: no limit"
    )
    burst: int | None = Field(
        default=None, ge=1, description="requests above the rate one key may make at once"
    )
    unfinished: int | None = Field(
        default=None,
        ge=1,
        description="requests one key may have in flight or queued at once; None: no limit",
    )
    metrics: Literal["loopback", "admin", "open"] = Field(
        default="loopback",
        description="who may read /_yurt/metrics: loopback callers, the admin token and ADMIN "
        "keys (loopback); only the latter (admin); anyone (open)",
    )

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> KeysConfig:
        if self.burst is not None and self.rate is None:
            raise ValueError("burst is the headroom above rate: set rate too, or leave burst out")
        return self
