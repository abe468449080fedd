"""Typed configuration. The only module that reads environment variables."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from yurt.aio import LoopName
from yurt.backoff import capped_backoff
from yurt.errors import ConfigError
from yurt.spec import TEARDOWN_SLACK_S

MIB = 1024 * 1024

# Every environment variable this module reads: yurt's own configuration, credentials among it.
# A runner never gets one (``yurt.backends.localproc.runner_env``).
CONFIG_ENV = frozenset(
    (
        "YURT_ADMIN_TOKEN",
        "YURT_DATA_DIR",
        "YURT_SERVER",
        "XDG_DATA_HOME",
        "CUDA_VISIBLE_DEVICES",
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
        "NOMAD_NAMESPACE",
        "NOMAD_REGION",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_SSL",
    )
)


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
    """Crash backoff: ``step`` before the next start, doubling with each failure in a row up to
    ``cap``, reset on a ready runner."""

    step: float = Field(default=30.0, ge=0, description="seconds after the first failed start")
    cap: float = Field(default=600.0, ge=0, description="the longest wait between starts")

    def delay(self, failures: int) -> float:
        """Seconds before the next start after ``failures`` failed starts in a row."""
        return capped_backoff(failures, first=self.step, cap=self.cap)


class LocalBackendConfig(_Frozen):
    """The embedded backend: runners as subprocesses of this process."""

    python: str = Field(default_factory=lambda: sys.executable)
    host: str = "127.0.0.1"
    health: HealthConfig = HealthConfig()
    backoff: BackoffConfig = BackoffConfig()
    runner_loop: LoopName = Field(default="auto", description="event loop of the runners")
    kill_after: float = Field(
        default=TEARDOWN_SLACK_S,
        ge=0,
        description="extra seconds after the grace period before SIGKILL",
    )
    gpus: str | None = Field(
        default_factory=lambda: os.environ.get("CUDA_VISIBLE_DEVICES"),
        description="the GPUs runners may be given, as CUDA_VISIBLE_DEVICES lists them "
        "(indexes or UUIDs); None: every GPU NVML sees. Default: $CUDA_VISIBLE_DEVICES",
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
        ours = sorted(n for n in names if n in CONFIG_ENV or n.startswith(("NOMAD_", "CONSUL_")))
        if ours:
            raise ValueError(
                f"{ours} configure yurt itself and never reach a runner; remove them (give an "
                "app a key of its own under another name)"
            )
        return names

    console: bool = Field(
        default=False,
        description="also show each runner's output on this process's stderr, each line "
        "prefixed with the runner id (the log files in DATA_DIR/logs/ stay); "
        "yurt run turns it on unless --quiet",
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

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


# The most tries of one queued request or one webhook: beyond it a retry loop only hides a fault.
MAX_ATTEMPTS = 100


class WebhookConfig(_Frozen):
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
        description="HMAC key; None: generated once and kept in the data dir",
    )


class QueueConfig(_Frozen):
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


class NomadConfig(_Frozen):
    """Where and how runners are placed on a Nomad cluster."""

    addr: str = Field(default="http://127.0.0.1:4646", description="Nomad's HTTP API")
    token: str | None = Field(default=None, description="ACL token (X-Nomad-Token)")
    namespace: str = "default"
    region: str = "global"
    datacenters: tuple[str, ...] = ("*",)
    node_pool: str = "default"
    driver: Literal["raw_exec", "docker"] = "raw_exec"
    python: str = Field(
        default_factory=lambda: sys.executable,
        description="absolute path of the Python with yurt installed on the nodes (raw_exec)",
    )
    image: str = Field(default="yurt-runner:latest", description="runner image (docker)")
    job_prefix: str = Field(default="yurt", description="jobs are named <prefix>-<owner>-<app>")
    verify_tls: bool = True
    ca_cert: Path | None = None
    timeout: float = Field(default=10.0, gt=0, description="seconds one API call may take")
    retries: int = Field(
        default=4, ge=0, le=20, description="retries of a call that failed transiently"
    )
    blocking_wait: float = Field(
        default=60.0, ge=1, le=300, description="seconds a blocking query waits for a change"
    )
    check_interval: float = Field(
        default=10.0, ge=1, description="seconds between Consul checks of a runner (Nomad: >= 1)"
    )
    check_timeout: float = Field(default=2.0, ge=1, description="seconds one check may take")
    restart_delay: float = Field(
        default=15.0, ge=0, description="seconds before Nomad restarts a runner that exited"
    )


class ConsulConfig(_Frozen):
    """Where healthy runners are found, and where the router announces itself."""

    addr: str = Field(default="http://127.0.0.1:8500", description="Consul's HTTP API")
    token: str | None = Field(default=None, description="ACL token (X-Consul-Token)")
    verify_tls: bool = True
    # py-consul's aiohttp session gives up after 300 s: keep blocking queries well under it.
    # Whole seconds from 1: a wait of 0 means Consul's default of five minutes.
    blocking_wait: float = Field(
        default=60.0, ge=1, le=240, description="seconds a blocking query waits for a change"
    )
    router_service: str | None = Field(
        default="yurt-router", description="service name the server registers; None: don't"
    )
    router_check_interval: float = Field(default=10.0, ge=1)


class MachineOverride(_Frozen):
    """What a deployment changes about one machine type of the catalog (``yurt.machines``).

    The runner's GPU check, the local backend's GPU assignment and the Nomad job all read the
    catalog with these applied.
    """

    gpu_model_pattern: str | None = Field(
        default=None, description="regular expression on the NVML name, e.g. '\\bH100\\b'"
    )
    gpu_memory_mib: int | None = Field(default=None, ge=1, description="least MiB per GPU")
    cpu_mhz: int | None = Field(default=None, ge=1, description="CPU a runner reserves (Nomad)")
    memory_mb: int | None = Field(default=None, ge=1, description="memory a runner reserves")

    @field_validator("gpu_model_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        # The pattern runs in Python (runners, the local backend) and in Go's RE2 (Nomad's
        # constraint), and travels in a task's arguments, where Nomad interpolates ${...}.
        if value is None:
            return value
        if "${" in value:
            raise ValueError("must not contain '${' (Nomad would interpolate it)")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a regular expression: {exc}") from None
        if re.search(r"\(\?[=!<]|\\[1-9]", value):
            raise ValueError("uses lookaround or a backreference, which Nomad's RE2 lacks")
        return value


class ServerConfig(_Frozen):
    """Everything ``yurt run`` / ``yurt server`` needs."""

    data_dir: Path
    event_loop: LoopName = "auto"
    backend: Literal["local", "nomad"] = "local"
    admin_token: str | None = Field(
        default=None, description="bearer token the admin API asks for; None: no token"
    )
    max_payload_size: int = Field(
        default=1024 * MIB, ge=1, description="largest payload the admin API takes"
    )
    router: RouterConfig = RouterConfig()
    queue: QueueConfig = QueueConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    local: LocalBackendConfig = LocalBackendConfig()
    nomad: NomadConfig = NomadConfig()
    consul: ConsulConfig = ConsulConfig()
    machines: dict[str, MachineOverride] = Field(
        default_factory=dict, description="changes to the machine catalog, by machine type"
    )

    @model_validator(mode="after")
    def _known_machines(self) -> ServerConfig:
        from yurt.machines import CATALOG

        unknown = sorted(set(self.machines) - set(CATALOG))
        if unknown:
            raise ValueError(f"unknown machine types {unknown}; the catalog has {sorted(CATALOG)}")
        return self

    def machine_overrides(self) -> dict[str, dict[str, Any]]:
        """``machines`` as plain data: what ``yurt.machines.with_overrides`` and runners take."""
        return {
            name: o.model_dump(exclude_none=True)
            for name, o in sorted(self.machines.items())
            if o.model_dump(exclude_none=True)
        }


def default_data_dir() -> Path:
    """``$YURT_DATA_DIR``, else ``$XDG_DATA_HOME/yurt``, else ``~/.local/share/yurt``."""
    if env := os.environ.get("YURT_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "yurt"


def nomad_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """NomadConfig fields from Nomad's own variables (NOMAD_ADDR, NOMAD_TOKEN, ...)."""
    env = os.environ if environ is None else environ
    names = {"NOMAD_ADDR": "addr", "NOMAD_TOKEN": "token", "NOMAD_NAMESPACE": "namespace"}
    names["NOMAD_REGION"] = "region"
    return {field: env[var] for var, field in names.items() if env.get(var)}


def consul_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """ConsulConfig fields from Consul's own variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN)."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    if addr := env.get("CONSUL_HTTP_ADDR"):
        # Consul's CLI accepts a bare host:port; CONSUL_HTTP_SSL picks the scheme.
        if "://" not in addr:
            ssl = env.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
            addr = f"{'https' if ssl else 'http'}://{addr}"
        out["addr"] = addr
    if token := env.get("CONSUL_HTTP_TOKEN"):
        out["token"] = token
    return out


def admin_token_env(environ: dict[str, str] | None = None) -> str | None:
    """``$YURT_ADMIN_TOKEN``: the admin API's bearer token, for the server and for deploy."""
    env = os.environ if environ is None else environ
    return env.get("YURT_ADMIN_TOKEN") or None


def server_url_env(environ: dict[str, str] | None = None) -> str:
    """``$YURT_SERVER``, else the server ``yurt server`` starts by default."""
    env = os.environ if environ is None else environ
    return (env.get("YURT_SERVER") or "http://127.0.0.1:8080").rstrip("/")


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file of ``ServerConfig`` fields (sections ``[router]``, ``[nomad]``, ...)."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, section by section. Pure."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def build_server_config(
    file: dict[str, Any], flags: dict[str, Any], environ: dict[str, str] | None = None
) -> ServerConfig:
    """Defaults, then the file, then Nomad's and Consul's variables, then flags; validated.

    A mistake names the field: ``nomad.check_interval: Input should be greater than or equal
    to 1``.
    """
    env: dict[str, Any] = {}
    if nomad := nomad_env(environ):
        env["nomad"] = nomad
    if consul := consul_env(environ):
        env["consul"] = consul
    if token := admin_token_env(environ):
        env["admin_token"] = token
    values = merged(merged(file, env), flags)
    values.setdefault("data_dir", default_data_dir())
    try:
        return ServerConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
