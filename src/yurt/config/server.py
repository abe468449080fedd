"""The machine catalog's changes, app environments, the file store, and ``ServerConfig``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from yurt.aio import LoopName
from yurt.config.base import MIB, Frozen
from yurt.config.cluster import ConsulConfig, NomadConfig
from yurt.config.local import LocalBackendConfig, SchedulerConfig
from yurt.config.router import KeysConfig, QueueConfig, RouterConfig
from yurt.machines import Constraint


class MachineOverride(Frozen):
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
        default=None,
        min_length=1,
        description="Nomad node pool of this type's runners (Nomad only)",
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


class EnvsConfig(Frozen):
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


class S3Config(Frozen):
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


class FilesConfig(Frozen):
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


class ServerConfig(Frozen):
    """Everything ``yurt run`` / ``yurt server`` needs."""

    data_dir: Path
    event_loop: LoopName = "auto"
    backend: Literal["local", "nomad"] = "local"
    admin_token: str | None = Field(
        default=None,
        min_length=1,
        description="bearer token the admin API asks for; None: no token",
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
