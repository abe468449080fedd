"""Where runners are placed (``[nomad]``) and found (``[consul]``)."""

from __future__ import annotations

import posixpath
import sys
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from yurt.config.base import CONSUL_PORT, NOMAD_PORT, Frozen, parse_addr
from yurt.config.tls import ClusterTLS


class VolumeConfig(Frozen):
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
    namespace: str = Field(default="default", min_length=1)
    region: str = Field(default="global", min_length=1)
    datacenters: tuple[str, ...] | None = Field(
        default=None,
        description="the one datacenter runners are placed in; None: the Consul agent's own",
    )
    node_pool: str = Field(
        default="default",
        min_length=1,
        description="node pool of apps whose machine type names none",
    )
    driver: Literal["raw_exec", "docker"] = "raw_exec"
    user: str | None = Field(
        default=None,
        min_length=1,
        description="user raw_exec runs runners as; None: the Nomad agent's",
    )
    volumes: dict[str, VolumeConfig] = Field(
        default_factory=dict,
        description="a volume per app id ('owner/app'), or '*' for every other app (docker)",
    )
    python: str = Field(
        default_factory=lambda: sys.executable,
        description="absolute path of the Python with yurt installed on the nodes (raw_exec)",
    )
    image: str = Field(
        default="yurt-runner:latest", min_length=1, description="runner image (docker)"
    )
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
    job_prefix: str = Field(
        default="yurt",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$",
        description="jobs are named <prefix>-<owner>-<app>",
    )
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

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        parse_addr(value, service="nomad", default_port=NOMAD_PORT)
        return value

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
        if self.driver == "raw_exec" and not posixpath.isabs(self.python):
            raise ValueError(
                f"python={self.python!r} is not an absolute path; raw_exec runs it as given on "
                "every node: set the full path of the Python that has yurt installed, e.g. "
                "/opt/yurt/venv/bin/python"
            )
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
        default="yurt-router",
        min_length=1,
        description="service name the server registers; None: don't",
    )
    router_check_interval: float = Field(default=10.0, ge=1)

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        parse_addr(value, service="consul", default_port=CONSUL_PORT)
        return value
