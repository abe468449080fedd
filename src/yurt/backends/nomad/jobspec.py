"""The Nomad job of one app revision. Pure: no I/O, no clock, no environment.

``build_job`` turns an ``AppSpec``, where its payload lives and the ``NomadConfig`` into the Job
object of ``POST /v1/jobs``; ``register_body`` wraps it. Every value Nomad would otherwise default
is written out, so that the golden files in the tests show the whole job.

Facts it follows (see NOMAD_CONSUL.md in the shared reference):

- keys are Go field names and Nomad drops unknown ones silently, so the tests validate every job;
- durations are integers in nanoseconds (``ns``); Meta and Env values are strings;
- ``${device.model}`` is the NVML name (``NVIDIA H100 80GB HBM3``), matched with ``regexp``, and
  ``${device.attr.memory}`` its memory in MiB, compared with ``>=`` and a unit (``79 GiB``);
- a group service's ``check_restart`` grace starts when the allocation is created (nomad#25318),
  so it covers the payload download, an image pull and the model load, not the load alone;
- Nomad gives a GPU task only ``NVIDIA_VISIBLE_DEVICES``; the runner sets ``CUDA_VISIBLE_DEVICES``
  from it, and the docker driver picks the nvidia runtime itself (no ``runtime`` here).
- placement (hashicorp/nomad@aa026cc9): an empty ``Datacenters`` means ``["*"]``
  (nomad/structs/structs.go:4687) and each entry is a glob (structs.go:2270); ``NodePool``
  defaults to ``default`` (nomad/structs/node_pool.go:26); constraints all hold, and JSON needs
  their ``Operand``; volumes are the group's ``Volumes`` plus the task's ``VolumeMounts``
  (api/tasks.go:448-475), and raw_exec mounts none (drivers/rawexec/driver.go:115);
- a task's environment is its ``Env``, the NOMAD_* variables and, for raw_exec, the Nomad
  client's own environment less its ``env.denylist`` (NOMAD_TOKEN, CONSUL_HTTP_TOKEN,
  VAULT_TOKEN, cloud keys by default): never the yurt server's. ``Env`` carries no secret and
  no token: those come from the job's Variable through the task's template (``appenv``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from yurt.appdata import app_data_env
from yurt.backends.nomad.appenv import (
    ENVS_MOUNT,
    ENVS_VOLUME,
    bootstrap_args,
    builds_environment,
    secrets_template,
    uses_bootstrap,
)
from yurt.backends.nomad.naming import GROUP, PORT_LABEL, TASK, PayloadRef, job_id, ns
from yurt.backends.nomad.placement import gpu_device, placement, resources
from yurt.backends.nomad.service import (
    BASIC_HEALTH_PATH,
    HEALTH_PATH,
    META_APP_ID,
    META_APP_NAME,
    META_MACHINE_TYPE,
    META_OWNER,
    META_PAYLOAD_SHA256,
    META_REVISION,
    STARTUP_SLACK_S,
    check,
    service,
)
from yurt.config import EnvsConfig, NomadConfig, VolumeConfig
from yurt.errors import ConfigError, DeployError
from yurt.machines import PLACEMENT_FIELDS, with_overrides
from yurt.runner.contract import BOOTSTRAP_MODULE, RUNNER_MODULE, runner_argv
from yurt.spec import TEARDOWN_SLACK_S, AppSpec

__all__ = [
    "APP_DATA_DIR",
    "BASIC_HEALTH_PATH",
    "CONTAINER_PORT",
    "HEALTH_PATH",
    "META_APP_ID",
    "META_APP_NAME",
    "META_MACHINE_TYPE",
    "META_OWNER",
    "META_PAYLOAD_SHA256",
    "META_REVISION",
    "STARTUP_SLACK_S",
    "build_job",
    "check",
    "gpu_device",
    "ns",
    "placement",
    "register_body",
    "resources",
    "runner_args",
    "timings",
]

# The runner's port inside a docker container: with ``To`` set, ${NOMAD_PORT_http} is this port
# and Nomad maps the dynamic host port onto it.
CONTAINER_PORT = 8080

# Time after the grace period for the runner's teardown before Nomad sends SIGKILL (the local
# backend's kill_after); the runner budgets its teardown by it.
KILL_SLACK_S = TEARDOWN_SLACK_S
# The client's alloc health tracker uses these too when no deployment runs (the group's
# migrate strategy then; client/allocrunner/health_hook.go:141-152): keep it short.
MIN_HEALTHY_S = 5.0
HEALTHY_DEADLINE_FLOOR_S = 300.0  # Nomad's default HealthyDeadline
PROGRESS_MARGIN_S = 300.0  # Nomad's defaults keep ProgressDeadline 5 min past HealthyDeadline
# Where an app's volume (``[nomad.volumes]``) is mounted in its runners, told to the app as
# YURT_APP_DATA_DIR with the usual caches under it (``yurt.appdata``: HF_HOME, TORCH_HOME...),
# so weights a runner downloaded are there for the next runner that shares the volume. An app
# without a volume gets none of these: its caches go where the libraries default to, inside
# the allocation, gone with it.
APP_DATA_DIR = "/data"
VOLUME_NAME = "yurt-data"


def build_job(
    app_id: str,
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    *,
    count: int = 0,
    machines: Mapping[str, Mapping[str, Any]] | None = None,
    datacenters: Sequence[str] | None = None,
    envs: EnvsConfig | None = None,
) -> dict[str, Any]:
    """The Nomad Job object (not wrapped in ``{"Job": ...}``) that runs ``app_id``'s runners.

    One service job named ``naming.job_id``, one group ``runner`` of ``count`` allocations, each
    a runner that downloads ``payload`` at start. ``machines`` are the server's changes to the
    machine catalog (``ServerConfig.machine_overrides()``): they size the task and its GPU
    request, and the runner gets them too, for its own GPU check; their node pool and
    constraints place it (``placement``). ``datacenters`` are where the server found Consul's
    agent (``config.datacenters`` wins; with neither, Nomad's ``*``); ``envs`` the server's
    ``[envs]``, which builds the app's environment on the node. Raises ``ConfigError``
    for a raw_exec Python that is not an absolute path, ``AppDefinitionError`` for machine
    types that cannot be placed, and ``DeployError`` for a count outside
    ``0..spec.max_concurrency``.
    """
    if not 0 <= count <= spec.max_concurrency:
        raise DeployError(
            f"{app_id}: count={count} is outside 0..max_concurrency={spec.max_concurrency}; "
            "Nomad refuses a Count outside the group's Scaling bounds"
        )
    name = job_id(config.job_prefix, app_id)
    owner, _, _ = app_id.rpartition("/")
    pool, _ = placement(spec, with_overrides(machines or {}), config)
    return {
        "ID": name,
        "Name": name,
        "Type": "service",
        "Namespace": config.namespace,
        "Region": config.region,
        "Datacenters": list(config.datacenters or datacenters or ("*",)),
        "NodePool": pool,
        "Priority": 50,
        "AllAtOnce": False,
        "Meta": {
            META_APP_ID: app_id,
            META_OWNER: owner,
            META_APP_NAME: spec.app_name,
            META_REVISION: payload.revision,
            META_PAYLOAD_SHA256: payload.sha256,
        },
        "TaskGroups": [
            _group(name, app_id, owner, spec, payload, config, count, machines or {}, envs)
        ],
    }


def register_body(job: dict[str, Any], *, preserve_counts: bool = True) -> dict[str, Any]:
    """The body of ``POST /v1/jobs``.

    ``PreserveCounts`` defaults to true: re-registering (a new revision) keeps the Count the
    scheduler set instead of resetting it to the job's.
    """
    return {"Job": job, "PreserveCounts": preserve_counts}


def timings(spec: AppSpec, config: NomadConfig) -> dict[str, int]:
    """Grace, MinHealthyTime, HealthyDeadline and ProgressDeadline, in nanoseconds.

    The check_restart grace is startup_timeout plus ``STARTUP_SLACK_S``; a runner is healthy
    ``MIN_HEALTHY_S`` after its check first passes; HealthyDeadline leaves two check intervals
    beyond that (at least Nomad's 5 min default) and ProgressDeadline 5 min more.
    """
    grace = spec.startup_timeout + STARTUP_SLACK_S
    healthy = max(HEALTHY_DEADLINE_FLOOR_S, grace + MIN_HEALTHY_S + 2 * config.check_interval)
    return {
        "Grace": ns(grace),
        "MinHealthyTime": ns(MIN_HEALTHY_S),
        "HealthyDeadline": ns(healthy),
        "ProgressDeadline": ns(healthy + PROGRESS_MARGIN_S),
    }


def _group(
    name: str,
    app_id: str,
    owner: str,
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    count: int,
    machines: Mapping[str, Mapping[str, Any]],
    envs: EnvsConfig | None = None,
) -> dict[str, Any]:
    times = timings(spec, config)
    port: dict[str, Any] = {"Label": PORT_LABEL}
    if config.driver == "docker":
        port["To"] = CONTAINER_PORT
    _, constraints = placement(spec, with_overrides(machines), config)
    volume = config.volume_for(app_id)
    extra: dict[str, Any] = {}
    if constraints:
        extra["Constraints"] = constraints
    volumes = {VOLUME_NAME: volume} if volume is not None else {}
    if config.envs_volume is not None and builds_environment(spec, config):
        volumes[ENVS_VOLUME] = config.envs_volume
    if volumes:
        extra["Volumes"] = {key: _volume(key, v) for key, v in volumes.items()}
    return {
        "Name": GROUP,
        "Count": count,
        "Networks": [{"Mode": "host", "DynamicPorts": [port]}],
        "Services": [service(name, app_id, owner, spec, payload, config, times["Grace"])],
        "Update": _update(times),
        # Min 0: the scheduler, not Nomad, keeps min_concurrency; Max bounds the scale calls.
        "Scaling": {
            "Type": "horizontal",
            "Min": 0,
            "Max": spec.max_concurrency,
            "Enabled": True,
        },
        **_policies(config),
        "EphemeralDisk": {"SizeMB": 300, "Migrate": False, "Sticky": False},
        # Nomad deregisters the group's services, then waits ShutdownDelay before signalling
        # the task (client/allocrunner/group_service_hook.go:241-258): one check interval
        # lets the router's discovery drop a runner that Nomad stops (drain, rollout) before
        # it stops answering.
        "ShutdownDelay": ns(config.check_interval),
        **extra,
        "Tasks": [_task(name, spec, payload, config, machines, volume, envs or EnvsConfig())],
    }


def _policies(config: NomadConfig) -> dict[str, Any]:
    """The group's RestartPolicy and ReschedulePolicy."""
    return {
        "RestartPolicy": {
            "Attempts": 2,
            "Interval": ns(30 * 60),
            "Delay": ns(config.restart_delay),
            "Mode": "fail",
            "RenderTemplates": False,
        },
        # Nomad's service defaults: a runner that keeps failing moves on, ever more slowly.
        "ReschedulePolicy": {
            "Attempts": 0,
            "Interval": 0,
            "Delay": ns(30),
            "DelayFunction": "exponential",
            "MaxDelay": ns(3600),
            "Unlimited": True,
        },
    }


def _volume(name: str, volume: VolumeConfig) -> dict[str, Any]:
    """The group's VolumeRequest (api/tasks.go:448), as nomad/structs/volumes.go:147 checks it.

    A host volume takes no access or attachment mode here (a client's static host_volume has
    none) and no mount options (volumes.go:177); a CSI volume needs both modes (volumes.go:200,
    209), and only ``file-system`` can be mounted at a path.
    """
    csi = volume.type == "csi"
    return {
        "Name": name,
        "Type": volume.type,
        "Source": volume.source,
        "ReadOnly": volume.read_only,
        "Sticky": False,
        "PerAlloc": False,
        "AccessMode": (volume.access_mode or "multi-node-multi-writer") if csi else "",
        "AttachmentMode": "file-system" if csi else "",
    }


def _update(times: dict[str, int]) -> dict[str, Any]:
    """The group's Update block: MaxParallel 0, so that Nomad never opens a deployment.

    Decision (read in hashicorp/nomad; docs/nomad.md, "Deployments and scaling"): a deployment
    blocks scaling, so none is ever made. ``UpdateStrategy.IsEmpty`` is ``MaxParallel == 0``
    (nomad/structs/structs.go:5507-5519), and the reconciler creates no deployment for an
    empty strategy (scheduler/reconciler/reconcile_cluster.go:1040-1043). With one, every
    Count change of a running group is an in-place update that opens a deployment
    (reconcile_cluster.go:1046-1058), ``Job.Scale`` refuses any other Count while it is active
    ("job scaling blocked due to active deployment", nomad/job_endpoint.go:1063-1064), a
    progress-based one stays active until ProgressDeadline while its failing allocations are
    replaced (nomad/deploymentwatcher/deployment_watcher.go:611-617, 700-720), and a failed
    one's allocations are never rescheduled (reconcile_cluster.go:951-957). The alternative,
    keeping deployments with ProgressDeadline 0 and failing the one in the way through
    ``/v1/deployment/fail/:id`` before each scale, needs a call per scale, races the scheduler
    (each accepted scale opens the next deployment) and leaves the failed deployment's
    allocations unrescheduled. The price: a changed task is replaced all at once
    (``computeUnderProvisionedBy`` places the whole Count for an empty strategy,
    reconcile_cluster.go:794-796), so a revision without a gap needs yurt's own roll.

    Omitting the block does not work (the api package fills ``DefaultUpdateStrategy``,
    MaxParallel 1, into a service job, api/jobs.go:636-640, 1228-1231, and a group inherits
    it, api/tasks.go:556-566); an explicit 0 is kept (command/agent/job_endpoint.go:1338-1340).
    The other fields are still validated (structs.go:5464-5503), so they stay valid values.
    """
    return {
        "MaxParallel": 0,
        "HealthCheck": "checks",
        "MinHealthyTime": times["MinHealthyTime"],
        "HealthyDeadline": times["HealthyDeadline"],
        "ProgressDeadline": times["ProgressDeadline"],
        # The server decides which revision runs and how many: a revert would bring back an
        # earlier job version (an older payload, or the Count before a scale) behind its back.
        "AutoRevert": False,
        "AutoPromote": False,
        "Canary": 0,
        "Stagger": ns(30),
    }


def _task(
    job_name: str,
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    machines: Mapping[str, Mapping[str, Any]],
    volume: VolumeConfig | None,
    envs: EnvsConfig,
) -> dict[str, Any]:
    """The runner task.

    KillTimeout is the app's termination_grace_period_seconds plus ``KILL_SLACK_S`` for its
    teardown. Nomad clients cap it at their ``max_kill_timeout`` (30 s by default), so a longer
    grace period needs that client setting raised too. An app with requirements or required
    secrets starts with ``yurt.runner.bootstrap``, which builds its environment and checks its
    secrets before it becomes the runner (``appenv``).
    """
    driver_config = _driver_config(spec, payload, config, machines, envs)
    # What the runner needs and nothing of the server's (no NomadConfig.token): user code
    # runs in the task, and anyone allowed to read the job reads its Env. The payload token
    # and the secrets come from the job's Variable, through the template.
    env = {"PYTHONUNBUFFERED": "1", **dict(payload.env)}
    task: dict[str, Any] = {"Name": TASK, "Driver": config.driver}
    if config.user is not None:
        # raw_exec's executor runs the command as Task.User (drivers/rawexec/driver.go:436);
        # the Nomad client must run as root to switch users.
        task["User"] = config.user
    task["Config"] = driver_config
    mounts = []
    if volume is not None:
        env |= app_data_env(APP_DATA_DIR)
        mounts.append(_mount(VOLUME_NAME, APP_DATA_DIR, volume.read_only))
    if config.envs_volume is not None and builds_environment(spec, config):
        mounts.append(_mount(ENVS_VOLUME, ENVS_MOUNT, config.envs_volume.read_only))
    if mounts:
        task["VolumeMounts"] = mounts
    return task | {
        "Env": env,
        "Templates": [secrets_template(job_name)],
        "Resources": resources(spec, with_overrides(machines)),
        "KillTimeout": ns(spec.termination_grace_period_seconds + KILL_SLACK_S),
        "KillSignal": "SIGTERM",
        "LogConfig": {"MaxFiles": 10, "MaxFileSizeMB": 10},
    }


def _driver_config(
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    machines: Mapping[str, Mapping[str, Any]],
    envs: EnvsConfig,
) -> dict[str, Any]:
    """The task's driver Config: the command (raw_exec) or the image (docker) and the runner's
    arguments, through ``yurt.runner.bootstrap`` where the app needs it."""
    args = runner_args(payload, machines)
    module = ["-m", RUNNER_MODULE]
    if uses_bootstrap(spec, config):
        module = ["-m", BOOTSTRAP_MODULE]
        args = [*bootstrap_args(spec, config, envs), "--", *args]
    if config.driver == "raw_exec":
        if not posixpath.isabs(config.python):
            raise ConfigError(
                f"nomad.python={config.python!r} is not an absolute path; raw_exec runs it as "
                "given on every node: set the full path of the Python that has yurt installed, "
                "e.g. /opt/yurt/venv/bin/python"
            )
        return {"command": config.python, "args": [*module, *args]}
    # The runner image's entrypoint is ``python -m yurt.runner``. An app's own image need not
    # have it: only a ``python`` on its PATH with yurt installed.
    docker: dict[str, Any] = {"image": spec.image or config.image, "args": args}
    docker["ports"] = [PORT_LABEL]
    if spec.image or module[-1] != RUNNER_MODULE:
        docker["entrypoint"] = ["python", *module]
    return docker


def _mount(volume: str, destination: str, read_only: bool) -> dict[str, Any]:
    """api/tasks.go:469 VolumeMount, with the defaults its Canonicalize writes."""
    return {
        "Volume": volume,
        "Destination": destination,
        "ReadOnly": read_only,
        "PropagationMode": "private",
        "SELinuxLabel": "",
    }


def runner_args(
    payload: PayloadRef, machines: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """The runner's arguments after ``python -m yurt.runner`` (the token travels in the env).

    The runner gets the catalog changes it checks GPUs by, not placement (``PLACEMENT_FIELDS``):
    a constraint's ``${node.class}`` in a task's args would be interpolated by Nomad.
    """
    told = {
        name: kept
        for name, fields in (machines or {}).items()
        if (kept := {k: v for k, v in fields.items() if k not in PLACEMENT_FIELDS})
    }
    return runner_argv(
        payload_url=payload.url,
        payload_sha256=payload.sha256,
        host="0.0.0.0",  # Consul checks the host's address, never 127.0.0.1
        port=f"${{NOMAD_PORT_{PORT_LABEL}}}",
        runner_id="${NOMAD_ALLOC_ID}",
        log_format="json",
        machines=told,
        sort_machines=True,
    )
