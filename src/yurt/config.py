"""Typed configuration. The only module that reads environment variables."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from yurt.aio import LoopName
from yurt.backoff import capped_backoff
from yurt.errors import ConfigError
from yurt.machines import Constraint
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
        "NOMAD_CACERT",
        "NOMAD_CAPATH",
        "NOMAD_CLIENT_CERT",
        "NOMAD_CLIENT_KEY",
        "NOMAD_TLS_SERVER_NAME",
        "NOMAD_SKIP_VERIFY",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
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


# The TLS settings of a Nomad or Consul client, by field, with the variable of their own CLIs
# that sets each (hashicorp/nomad api/api.go and hashicorp/consul api/api.go, DefaultConfig).
_TLS_ENV: dict[str, dict[str, str]] = {
    "NOMAD": {
        "ca_cert": "NOMAD_CACERT",
        "ca_path": "NOMAD_CAPATH",
        "client_cert": "NOMAD_CLIENT_CERT",
        "client_key": "NOMAD_CLIENT_KEY",
        "tls_server_name": "NOMAD_TLS_SERVER_NAME",
        "verify_tls": "NOMAD_SKIP_VERIFY",
    },
    "CONSUL": {
        "ca_cert": "CONSUL_CACERT",
        "ca_path": "CONSUL_CAPATH",
        "client_cert": "CONSUL_CLIENT_CERT",
        "client_key": "CONSUL_CLIENT_KEY",
        "tls_server_name": "CONSUL_TLS_SERVER_NAME",
        "verify_tls": "CONSUL_HTTP_SSL_VERIFY",
    },
}


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind a client library's exception, if any.

    requests nests it in args and ``reason``; aiohttp in ``os_error`` or as the cause.
    """
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        # aiohttp's ClientConnectorCertificateError is itself an SSLCertVerificationError,
        # without its details: take the one it wraps.
        if isinstance(cert := getattr(e, "certificate_error", None), ssl.SSLError):
            return cert
        if isinstance(e, ssl.SSLError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        stack.append(getattr(e, "os_error", None))
    return None


class ClusterTLS(_Frozen):
    """TLS towards a Nomad or Consul agent over https: whom to trust, and who we are.

    The fields mean what the agents' own CLIs make of their variables (``api/api.go``,
    ``DefaultConfig``, in hashicorp/nomad and hashicorp/consul): ``ca_cert`` wins over
    ``ca_path`` (go-rootcerts), ``tls_server_name`` is the name sent (SNI) and checked in the
    agent's certificate instead of the address's host, and ``verify_tls = false`` checks
    nothing. Files are checked when the configuration is read; they are loaded when a client
    is built (``ssl_context``, ``requests_verify``).
    """

    _ENV: ClassVar[str] = ""

    verify_tls: bool = Field(
        default=True, description="check the agent's certificate (false: insecure, tests only)"
    )
    ca_cert: Path | None = Field(
        default=None, description="PEM file of the CAs that sign the agent's certificate"
    )
    ca_path: Path | None = Field(
        default=None, description="directory of PEM CA files (c_rehash'ed); ca_cert wins"
    )
    client_cert: Path | None = Field(
        default=None, description="PEM client certificate, for agents that verify clients"
    )
    client_key: Path | None = Field(default=None, description="PEM private key of client_cert")
    tls_server_name: str | None = Field(
        default=None, description="the name in the agent's certificate, when not the addr's host"
    )

    @classmethod
    def _setting(cls, field: str) -> str:
        """``client_cert (NOMAD_CLIENT_CERT)``: a field as a user sets it."""
        var = _TLS_ENV.get(cls._ENV, {}).get(field)
        return f"{field} ({var})" if var else field

    @field_validator("ca_cert", "client_cert", "client_key")
    @classmethod
    def _a_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.is_file():
            name = cls._setting(str(info.field_name))
            raise ValueError(f"{name}: {value} is not a file; give the path of a PEM file")
        return value

    @field_validator("ca_path")
    @classmethod
    def _a_directory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            name = cls._setting("ca_path")
            raise ValueError(f"{name}: {value} is not a directory of PEM CA files")
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> ClusterTLS:
        if (self.client_cert is None) != (self.client_key is None):
            given, missing = ("client_cert", "client_key")
            if self.client_cert is None:
                given, missing = missing, given
            raise ValueError(
                f"{self._setting(given)} is set but {self._setting(missing)} is not: a client "
                "certificate and its key go together, give both or neither"
            )
        return self

    def client_pair(self) -> tuple[str, str] | None:
        """(certificate, key) paths, or None without a client certificate."""
        if self.client_cert is None or self.client_key is None:
            return None
        return str(self.client_cert), str(self.client_key)

    def requests_verify(self) -> bool | str:
        """``verify`` as requests takes it: False, a CA file or directory, or True."""
        if not self.verify_tls:
            return False
        ca = self.ca_cert or self.ca_path
        return str(ca) if ca is not None else True

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext with these settings; a file that does not load is a ConfigError.

        The default context trusts the system's CAs unless ``ca_cert`` or ``ca_path`` names
        others (as Go's tls client does with a RootCAs pool).
        """
        if not self.verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            # With a CA file or directory, only those CAs are trusted (the system's are not).
            field = "ca_cert" if self.ca_cert is not None else "ca_path"
            try:
                ctx = ssl.create_default_context(
                    cafile=None if self.ca_cert is None else str(self.ca_cert),
                    capath=None
                    if self.ca_cert is not None or self.ca_path is None
                    else str(self.ca_path),
                )
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{self._setting(field)}: cannot load {self.ca_cert or self.ca_path}: "
                    f"{exc}; give PEM CA certificates"
                ) from exc
        if (pair := self.client_pair()) is not None:
            try:
                ctx.load_cert_chain(*pair)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{self._setting('client_cert')} and {self._setting('client_key')}: cannot "
                    f"load {pair[0]} with {pair[1]}: {exc}; give a PEM certificate and its key"
                ) from exc
        return ctx

    @classmethod
    def handshake_advice(cls, failure: ssl.SSLError) -> str | None:
        """What to set when a TLS handshake with the agent failed with ``failure``; None when
        the failure says nothing about the settings (the connection was cut: EOF, reset)."""
        if isinstance(failure, ssl.SSLCertVerificationError):
            return (
                f"the agent's certificate is not trusted "
                f"({getattr(failure, 'verify_message', None) or failure}); set "
                f"{cls._setting('ca_cert')} to the CA that signed it, or "
                f"{cls._setting('tls_server_name')} to the name it carries"
            )
        if isinstance(failure, ssl.SSLEOFError | ssl.SSLSyscallError | ssl.SSLZeroReturnError):
            return None
        reason = getattr(failure, "reason", None) or str(failure)
        # An alert from the agent (TLSV13_ALERT_CERTIFICATE_REQUIRED, ..._BAD_CERTIFICATE,
        # ..._UNKNOWN_CA) is how a Go agent with verify_https_client refuses a client.
        return (
            f"{reason}; if the agent verifies clients, set {cls._setting('client_cert')} and "
            f"{cls._setting('client_key')} to a certificate signed by a CA it trusts; if it "
            "does not speak https at that address, use http://"
        )

    @classmethod
    def disconnect_hint(cls, addr: str) -> str:
        """A hint for a connection to ``addr`` that was cut: over https it may be the agent
        refusing our client certificate (an agent that sends no alert just closes)."""
        if not addr.lower().startswith("https://"):
            return ""
        return (
            f"; if the agent verifies clients (verify_https_client), check "
            f"{cls._setting('client_cert')} and {cls._setting('client_key')}: a missing or "
            "unknown client certificate also ends the connection"
        )

    def describe(self) -> str:
        """The settings in use, for a report (paths, never contents)."""
        if not self.verify_tls:
            parts = ["certificate NOT verified"]
        elif self.ca_cert is not None or self.ca_path is not None:
            parts = [f"CA {self.ca_cert or self.ca_path}"]
        else:
            parts = ["system CAs"]
        if self.client_cert is not None:
            parts.append(f"client certificate {self.client_cert}")
        if self.tls_server_name:
            parts.append(f"server name {self.tls_server_name}")
        return ", ".join(parts)


class VolumeConfig(_Frozen):
    """A Nomad volume mounted at ``APP_DATA_DIR`` in an app's runners (``[nomad.volumes]``).

    A host volume (``type = "host"``) names one of the clients' ``host_volume`` blocks: the
    runners of a node share it, so a model downloaded once there stays for the next runner.
    A CSI volume (``type = "csi"``) names a registered volume; runners on every node share it,
    so it must allow many writers (or be read-only). Fields as Nomad's ``VolumeRequest``
    (api/tasks.go:448 at hashicorp/nomad@aa026cc9), checked as its Validate does
    (nomad/structs/volumes.go:147).
    """

    type: Literal["host", "csi"]
    source: str = Field(min_length=1, description="the host volume's or CSI volume's name")
    read_only: bool = False
    # Only the modes that let runners of several nodes share one CSI volume: Nomad refuses
    # single-node modes for a group whose Count exceeds one (volumes.go:210-221).
    access_mode: Literal["multi-node-multi-writer", "multi-node-reader-only"] | None = Field(
        default=None, description="CSI only; default multi-node-multi-writer"
    )

    @model_validator(mode="after")
    def _modes(self) -> VolumeConfig:
        if self.type == "host" and self.access_mode is not None:
            raise ValueError("access_mode is for CSI volumes; leave it out of a host volume")
        # volumes.go:222-225: a reader-only mode needs a read-only request.
        if self.access_mode == "multi-node-reader-only" and not self.read_only:
            raise ValueError("access_mode multi-node-reader-only needs read_only = true")
        return self


class NomadConfig(ClusterTLS):
    """Where and how runners are placed on a Nomad cluster."""

    _ENV: ClassVar[str] = "NOMAD"

    addr: str = Field(default="http://127.0.0.1:4646", description="Nomad's HTTP API")
    token: str | None = Field(default=None, description="ACL token (X-Nomad-Token)")
    namespace: str = "default"
    region: str = "global"
    datacenters: tuple[str, ...] | None = Field(
        default=None,
        description="the one datacenter runners are placed in; None: the Consul agent's own",
    )
    node_pool: str = Field(
        default="default", description="node pool of apps whose machine type names none"
    )
    driver: Literal["raw_exec", "docker"] = "raw_exec"
    user: str | None = Field(
        default=None, description="user raw_exec runs runners as; None: the Nomad agent's"
    )
    volumes: dict[str, VolumeConfig] = Field(
        default_factory=dict,
        description="a volume per app id ('owner/app'), or '*' for every other app (docker)",
    )
    python: str = Field(
        default_factory=lambda: sys.executable,
        description="absolute path of the Python with yurt installed on the nodes (raw_exec)",
    )
    image: str = Field(default="yurt-runner:latest", description="runner image (docker)")
    envs_dir: str | None = Field(
        default=None,
        description="raw_exec: absolute directory on every node where app environments are "
        "built and kept for later runners; None: each allocation's own directory",
    )
    envs_volume: VolumeConfig | None = Field(
        default=None,
        description="docker: a volume where app environments are built and kept for later "
        "runners; None: each allocation's own directory",
    )
    secrets_path: str = Field(
        default="yurt/secrets",
        pattern=r"^[a-zA-Z0-9\-_~/]{1,100}$",
        description="Nomad Variables path under which `yurt secrets` are kept, one per secret",
    )
    job_prefix: str = Field(default="yurt", description="jobs are named <prefix>-<owner>-<app>")
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

    @field_validator("datacenters")
    @classmethod
    def _one_datacenter(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # The router follows one Consul datacenter (``?dc=``, which takes one name and no
        # pattern), while Nomad matches each entry as a glob (Node.IsInAnyDC,
        # nomad/structs/structs.go:2270): a runner placed anywhere else is never routed.
        if value is None:
            return value
        if len(value) != 1 or not value[0] or any(c in value[0] for c in "*?[]"):
            raise ValueError(
                f"{list(value)}: give one datacenter name, no pattern, e.g. ['dc1'] (the "
                "router finds runners in that one Consul datacenter only); leave it unset "
                "for the Consul agent's own datacenter"
            )
        return value

    @field_validator("volumes")
    @classmethod
    def _volume_keys(cls, value: dict[str, VolumeConfig]) -> dict[str, VolumeConfig]:
        bad = sorted(k for k in value if k != "*" and (k.count("/") != 1 or "" in k.split("/")))
        if bad:
            raise ValueError(
                f"keys {bad} are not app ids: use 'owner/app' (as in the app's URL) or '*'"
            )
        return value

    @model_validator(mode="after")
    def _driver_settings(self) -> NomadConfig:
        # raw_exec cannot mount volumes: its capabilities say MountConfigSupportNone
        # (drivers/rawexec/driver.go:115), and the client then fails the task ("does not
        # support host volumes", client/allocrunner/taskrunner/volume_hook.go:144).
        if self.volumes and self.driver != "docker":
            raise ValueError(
                f"volumes need driver = 'docker': Nomad cannot mount a volume into a "
                f"{self.driver} task; raw_exec runners already share the node's files"
            )
        if self.envs_dir is not None and (self.driver != "raw_exec" or self.envs_dir[:1] != "/"):
            raise ValueError("envs_dir is an absolute path on the nodes, for driver = 'raw_exec'")
        if self.envs_volume is not None and self.driver != "docker":
            raise ValueError("envs_volume needs driver = 'docker'; raw_exec takes envs_dir")
        if self.secrets_path.split("/")[0] == "nomad":
            raise ValueError("secrets_path: Nomad keeps 'nomad/' for itself; e.g. yurt/secrets")
        # Task.User means the image's user to docker; yurt sets it for raw_exec only.
        if self.user is not None and self.driver != "raw_exec":
            raise ValueError("user applies to driver = 'raw_exec'; a docker image sets its USER")
        return self

    def datacenter(self) -> str | None:
        """The one datacenter configured, which discovery asks too; None: the agent's own."""
        return self.datacenters[0] if self.datacenters else None

    def volume_for(self, app_id: str) -> VolumeConfig | None:
        """The volume of ``app_id``: its own entry, else the ``'*'`` entry, else None."""
        return self.volumes.get(app_id) or self.volumes.get("*")


class ConsulConfig(ClusterTLS):
    """Where healthy runners are found, and where the router announces itself."""

    _ENV: ClassVar[str] = "CONSUL"

    addr: str = Field(default="http://127.0.0.1:8500", description="Consul's HTTP API")
    token: str | None = Field(default=None, description="ACL token (X-Consul-Token)")
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
    node_pool: str | None = Field(
        default=None, description="Nomad node pool of this type's runners (Nomad only)"
    )
    constraints: tuple[Constraint, ...] | None = Field(
        default=None,
        description="Nomad constraints on the nodes of this type's runners, all must hold",
    )

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


class EnvsConfig(_Frozen):
    """How an App's environment is built from its ``requirements`` (``[envs]``)."""

    installer: Literal["pip", "uv"] = Field(
        default="pip",
        description="what installs requirements: pip (the default: it reads this machine's "
        "pip configuration, pip.conf and PIP_* variables, as they are) or uv (faster, when "
        "installed on PATH or beside yurt's interpreter; told the indexes, find-links, "
        "constraints and certificates of pip's configuration, and reading its own UV_* too)",
    )
    pip_args: tuple[str, ...] = Field(
        default=(),
        description="more arguments to the installer's install command, e.g. "
        '["--no-index", "--find-links", "/srv/wheels"]',
    )
    tail_lines: int = Field(
        default=20, ge=1, description="installer output lines a failed build reports"
    )


# S3's bucket naming rule (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html),
# which MinIO and other S3-compatible stores follow.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3Config(_Frozen):
    """An S3-compatible bucket the file store keeps its bytes in (``[files] s3 = {...}``).

    Credentials: ``access_key_id`` and ``secret_access_key`` here, else ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``) from the server's environment, else
    boto3's own chain (an instance role, ``~/.aws``). They are never shown (``SecretStr``) and
    never reach a runner.
    """

    bucket: str = Field(description="the bucket; it must exist")
    endpoint_url: str | None = Field(
        default=None, description="http(s) URL of an S3-compatible store; None: AWS S3 in region"
    )
    region: str = Field(default="us-east-1", min_length=1, description="the bucket's region")
    prefix: str = Field(
        default="", description="key prefix of everything the store writes, e.g. 'yurt/files'"
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="path: <endpoint>/<bucket>/<key>, which most self-hosted stores want; "
        "virtual: <bucket>.<endpoint>/<key>; auto: boto3's choice",
    )
    access_key_id: str | None = Field(default=None, repr=False)
    secret_access_key: SecretStr | None = Field(default=None, repr=False)
    session_token: SecretStr | None = Field(default=None, repr=False)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value:
            raise ValueError(
                f"{value!r} is not a bucket name: 3 to 63 lowercase letters, digits, dots and "
                "hyphens, beginning and ending with a letter or digit"
            )
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. http://127.0.0.1:9000")
        if parts.username or parts.password:  # not echoed: the value holds a credential
            raise ValueError("give the store's URL without credentials; keys go apart")
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: give the store's URL alone, with no query")
        return value.rstrip("/")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        parts = [p for p in value.strip().strip("/").split("/") if p]
        if any(p in (".", "..") or not p.isprintable() for p in parts):
            raise ValueError(f"prefix {value!r}: no '.' or '..' parts, no control characters")
        return "".join(f"{p}/" for p in parts)

    @model_validator(mode="after")
    def _key_pair(self) -> S3Config:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together: both or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self


class FilesConfig(_Frozen):
    """The file store behind ``/files/`` (``[files]``): toolkit outputs and uploads."""

    # fal's docs give no fixed lifetime for generated media (an account setting, null by
    # default, with 86400 s as their example); a week outlives the queue's result retention.
    ttl: float | None = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="seconds a stored file's URL lives; None: until removed by hand",
    )
    max_upload_size: int = Field(
        default=1024 * MIB, ge=0, description="largest body POST /files/upload takes"
    )
    sweep_interval: float = Field(
        default=300.0, gt=0, description="seconds between deletions of expired files"
    )
    s3: S3Config | None = Field(
        default=None, description="keep files in an S3-compatible bucket; None: in the data dir"
    )


class KeysConfig(_Frozen):
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
    envs: EnvsConfig = EnvsConfig()
    files: FilesConfig = FilesConfig()
    keys: KeysConfig = KeysConfig()
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


# strconv.ParseBool, which both agents' clients use for their boolean variables.
_GO_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_GO_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def go_bool(name: str, value: str) -> bool:
    """A boolean variable as Go's ``strconv.ParseBool`` reads it; anything else is refused.

    Nomad ignores a value it cannot parse and Consul treats it as false (so an unparsable
    ``CONSUL_HTTP_SSL_VERIFY`` turns verification off): a typo here must not do either.
    """
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false (or 1 or 0)")


def _tls_env(prefix: str, env: Any) -> dict[str, Any]:
    """ClusterTLS fields from the agent's own TLS variables (NOMAD_CACERT, CONSUL_CACERT...)."""
    out: dict[str, Any] = {}
    for field, var in _TLS_ENV[prefix].items():
        value = env.get(var)
        if not value:
            continue
        if field != "verify_tls":
            out[field] = value
        elif var == "NOMAD_SKIP_VERIFY":
            out[field] = not go_bool(var, value)
        else:
            out[field] = go_bool(var, value)
    return out


def nomad_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """NomadConfig fields from Nomad's own variables (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT,
    ...); a boolean that is not one is a ConfigError."""
    env = os.environ if environ is None else environ
    names = {"NOMAD_ADDR": "addr", "NOMAD_TOKEN": "token", "NOMAD_NAMESPACE": "namespace"}
    names["NOMAD_REGION"] = "region"
    out: dict[str, Any] = {field: env[var] for var, field in names.items() if env.get(var)}
    return out | _tls_env("NOMAD", env)


def consul_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """ConsulConfig fields from Consul's own variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
    CONSUL_CACERT, ...); a boolean that is not one is a ConfigError."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    if addr := env.get("CONSUL_HTTP_ADDR"):
        # Consul's CLI accepts a bare host:port; CONSUL_HTTP_SSL picks the scheme.
        if "://" not in addr:
            use_ssl = env.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
            addr = f"{'https' if use_ssl else 'http'}://{addr}"
        out["addr"] = addr
    if token := env.get("CONSUL_HTTP_TOKEN"):
        out["token"] = token
    return out | _tls_env("CONSUL", env)


def s3_env(file: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """S3Config credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and
    ``AWS_SESSION_TOKEN``) when ``[files] s3`` is configured without its own: as boto3 ranks
    them, credentials written for the bucket win over the environment's."""
    s3 = file.get("files", {}).get("s3") if isinstance(file.get("files"), dict) else None
    if not isinstance(s3, dict) or "access_key_id" in s3 or "secret_access_key" in s3:
        return {}
    env = os.environ if environ is None else environ
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        return {}
    out = {"access_key_id": key_id, "secret_access_key": secret}
    if token := env.get("AWS_SESSION_TOKEN"):
        out["session_token"] = token
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
    """Defaults, then the file, then Nomad's and Consul's variables (and AWS credentials for
    ``[files] s3``), then flags; validated.

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
    if s3 := s3_env(merged(file, flags), environ):
        env["files"] = {"s3": s3}
    values = merged(merged(file, env), flags)
    values.setdefault("data_dir", default_data_dir())
    try:
        return ServerConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
