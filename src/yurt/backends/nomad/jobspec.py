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
- a task's environment is its ``Env``, the NOMAD_* variables and, for raw_exec, the Nomad
  client's own environment less its ``env.denylist`` (NOMAD_TOKEN, CONSUL_HTTP_TOKEN,
  VAULT_TOKEN, cloud keys by default): never the yurt server's, so ``Env`` is the only way a
  server secret could reach a runner, and it carries none.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any

from yurt.backends.nomad.naming import GROUP, PORT_LABEL, TASK, TOKEN_ENV, PayloadRef, job_id
from yurt.config import NomadConfig
from yurt.errors import AppDefinitionError, ConfigError, DeployError
from yurt.machines import CATALOG, MachineType, with_overrides
from yurt.spec import TEARDOWN_SLACK_S, AppSpec

__all__ = [
    "CONTAINER_PORT",
    "HEALTH_PATH",
    "META_APP_ID",
    "META_APP_NAME",
    "META_MACHINE_TYPE",
    "META_OWNER",
    "META_PAYLOAD_SHA256",
    "META_REVISION",
    "build_job",
    "gpu_device",
    "ns",
    "register_body",
    "resources",
    "runner_args",
    "timings",
]

NS_PER_S = 1_000_000_000
HEALTH_PATH = "/_yurt/health"
# The runner's port inside a docker container: with ``To`` set, ${NOMAD_PORT_http} is this port
# and Nomad maps the dynamic host port onto it.
CONTAINER_PORT = 8080

# Meta keys (job and service): letters, digits and '_' only, so that they are valid Consul
# service meta keys and readable as NOMAD_META_<key> in the task.
META_APP_ID = "yurt_app_id"
META_OWNER = "yurt_owner"
META_APP_NAME = "yurt_app_name"
META_REVISION = "yurt_revision"
META_PAYLOAD_SHA256 = "yurt_payload_sha256"
META_MACHINE_TYPE = "yurt_machine_type"

# Time a runner needs before setup() starts: payload download, interpreter start and, with
# docker, an image pull, all of which count against check_restart's grace (nomad#25318).
STARTUP_SLACK_S = 120.0
# Time after the grace period for the runner's teardown before Nomad sends SIGKILL (the local
# backend's kill_after); the runner budgets its teardown by it.
KILL_SLACK_S = TEARDOWN_SLACK_S
# The client's alloc health tracker uses these too when no deployment runs (the group's
# migrate strategy then; client/allocrunner/health_hook.go:141-152): keep it short.
MIN_HEALTHY_S = 5.0
HEALTHY_DEADLINE_FLOOR_S = 300.0  # Nomad's default HealthyDeadline
PROGRESS_MARGIN_S = 300.0  # Nomad's defaults keep ProgressDeadline 5 min past HealthyDeadline
CHECK_RESTART_LIMIT = 3


def ns(seconds: float) -> int:
    """Seconds as the integer nanoseconds Nomad's JSON wants for every duration."""
    return round(seconds * NS_PER_S)


def build_job(
    app_id: str,
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    *,
    count: int = 0,
    machines: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Nomad Job object (not wrapped in ``{"Job": ...}``) that runs ``app_id``'s runners.

    One service job named ``naming.job_id``, one group ``runner`` of ``count`` allocations, each
    a runner that downloads ``payload`` at start. ``machines`` are the server's changes to the
    machine catalog (``ServerConfig.machine_overrides()``): they size the task and its GPU
    request, and the runner gets them too, for its own GPU check. Raises ``ConfigError`` for a
    raw_exec Python that is not an absolute path, ``AppDefinitionError`` for machine types that
    cannot be placed, and ``DeployError`` for a count outside ``0..spec.max_concurrency``.
    """
    if not 0 <= count <= spec.max_concurrency:
        raise DeployError(
            f"{app_id}: count={count} is outside 0..max_concurrency={spec.max_concurrency}; "
            "Nomad refuses a Count outside the group's Scaling bounds"
        )
    name = job_id(config.job_prefix, app_id)
    owner, _, _ = app_id.rpartition("/")
    return {
        "ID": name,
        "Name": name,
        "Type": "service",
        "Namespace": config.namespace,
        "Region": config.region,
        "Datacenters": list(config.datacenters),
        "NodePool": config.node_pool,
        "Priority": 50,
        "AllAtOnce": False,
        "Meta": {
            META_APP_ID: app_id,
            META_OWNER: owner,
            META_APP_NAME: spec.app_name,
            META_REVISION: payload.revision,
            META_PAYLOAD_SHA256: payload.sha256,
        },
        "TaskGroups": [_group(name, app_id, owner, spec, payload, config, count, machines or {})],
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
) -> dict[str, Any]:
    times = timings(spec, config)
    port: dict[str, Any] = {"Label": PORT_LABEL}
    if config.driver == "docker":
        port["To"] = CONTAINER_PORT
    return {
        "Name": GROUP,
        "Count": count,
        "Networks": [{"Mode": "host", "DynamicPorts": [port]}],
        "Services": [_service(name, app_id, owner, spec, payload, config, times["Grace"])],
        "Update": _update(times),
        # Min 0: the scheduler, not Nomad, keeps min_concurrency; Max bounds the scale calls.
        "Scaling": {
            "Type": "horizontal",
            "Min": 0,
            "Max": spec.max_concurrency,
            "Enabled": True,
        },
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
        "EphemeralDisk": {"SizeMB": 300, "Migrate": False, "Sticky": False},
        "ShutdownDelay": 0,
        "Tasks": [_task(spec, payload, config, machines)],
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


def _service(
    name: str,
    app_id: str,
    owner: str,
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    grace: int,
) -> dict[str, Any]:
    return {
        "Name": name,
        "PortLabel": PORT_LABEL,
        "Provider": "consul",
        "AddressMode": "auto",
        # Tags stay within letters, digits and '-': the revision is hex.
        "Tags": ["yurt", f"yurt-revision-{payload.revision}"],
        "Meta": {
            META_APP_ID: app_id,
            META_OWNER: owner,
            META_REVISION: payload.revision,
            META_MACHINE_TYPE: ",".join(spec.machine_types),
        },
        "Checks": [
            {
                "Name": "yurt-health",
                "Type": "http",
                "Protocol": "http",
                "Method": "GET",
                "Path": HEALTH_PATH,
                "Interval": ns(config.check_interval),
                "Timeout": ns(config.check_timeout),
                "InitialStatus": "critical",
                "SuccessBeforePassing": 0,
                "FailuresBeforeCritical": 0,
                # Liveness: a runner whose health stays failing is restarted, but not while
                # it may still be loading (Grace covers startup_timeout).
                "CheckRestart": {
                    "Limit": CHECK_RESTART_LIMIT,
                    "Grace": grace,
                    "IgnoreWarnings": False,
                },
            }
        ],
    }


def _task(
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    machines: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The runner task.

    KillTimeout is the app's termination_grace_period_seconds plus ``KILL_SLACK_S`` for its
    teardown. Nomad clients cap it at their ``max_kill_timeout`` (30 s by default), so a longer
    grace period needs that client setting raised too.
    """
    driver_config: dict[str, Any]
    if config.driver == "raw_exec":
        if not posixpath.isabs(config.python):
            raise ConfigError(
                f"nomad.python={config.python!r} is not an absolute path; raw_exec runs it as "
                "given on every node: set the full path of the Python that has yurt installed, "
                "e.g. /opt/yurt/venv/bin/python"
            )
        driver_config = {
            "command": config.python,
            "args": ["-m", "yurt.runner", *runner_args(payload, machines)],
        }
    else:
        # The image's entrypoint is ``python -m yurt.runner``.
        args = runner_args(payload, machines)
        driver_config = {"image": config.image, "args": args, "ports": [PORT_LABEL]}
    return {
        "Name": TASK,
        "Driver": config.driver,
        "Config": driver_config,
        # What the runner needs and nothing of the server's (no NomadConfig.token): user code
        # runs in the task, and anyone allowed to read the job reads its Env.
        "Env": {TOKEN_ENV: payload.token, "PYTHONUNBUFFERED": "1"},
        "Resources": resources(spec, with_overrides(machines)),
        "KillTimeout": ns(spec.termination_grace_period_seconds + KILL_SLACK_S),
        "KillSignal": "SIGTERM",
        "LogConfig": {"MaxFiles": 10, "MaxFileSizeMB": 10},
    }


def runner_args(
    payload: PayloadRef, machines: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """The runner's arguments after ``python -m yurt.runner`` (the token travels in the env)."""
    extra = ["--machines", json.dumps(machines, sort_keys=True)] if machines else []
    return [
        "--payload-url",
        payload.url,
        "--payload-sha256",
        payload.sha256,
        "--host",
        "0.0.0.0",  # Consul checks the host's address, never 127.0.0.1
        "--port",
        f"${{NOMAD_PORT_{PORT_LABEL}}}",
        "--runner-id",
        "${NOMAD_ALLOC_ID}",
        "--log-format",
        "json",
        *extra,
    ]


def _machine_types(spec: AppSpec, catalog: Mapping[str, MachineType]) -> list[MachineType]:
    unknown = [t for t in spec.machine_types if t not in catalog]
    if unknown or not spec.machine_types:
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} has no entry in the catalog "
            f"for {unknown}; use names from yurt.machines.known_machine_types()"
        )
    types = [catalog[t] for t in spec.machine_types]
    if len({t.gpu for t in types}) > 1:
        # build_spec refuses this too; a hand-made AppSpec must not slip a CPU into GPU fallbacks.
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} mixes CPU and GPU types; "
            "list only GPU types as fallbacks for each other"
        )
    return types


def resources(spec: AppSpec, catalog: Mapping[str, MachineType] = CATALOG) -> dict[str, Any]:
    """The task's Resources: CPU and memory of the machine type(s), and GPUs if any.

    ``catalog`` is the machine catalog with the server's changes applied. A list of machine
    types reserves the largest CPU and the largest memory among them, so that a runner fits
    whichever type it lands on.
    """
    types = _machine_types(spec, catalog)
    out: dict[str, Any] = {
        "CPU": max(t.cpu_mhz for t in types),
        "MemoryMB": max(t.memory_mb for t in types),
    }
    device = gpu_device(spec, catalog)
    if device is not None:
        out["Devices"] = [device]
    return out


def gpu_device(
    spec: AppSpec, catalog: Mapping[str, MachineType] = CATALOG
) -> dict[str, Any] | None:
    """The ``nvidia/gpu`` request of a GPU app, or None for a CPU app.

    A list of GPU types becomes one alternation (``H100|A100``); Nomad takes all GPUs of one
    request from one node and one model. A type without a model pattern accepts any model, and
    then so does the whole list. The memory floor (``gpu_memory_mib``, which the runner's probe
    and the local allocator check too) is the smallest of the list, so that a GPU of any listed
    type qualifies; a type without a floor drops it for the whole list.
    """
    types = _machine_types(spec, catalog)
    if not types[0].gpu:
        return None
    if spec.num_gpus < 1:
        raise AppDefinitionError(
            f"{spec.class_name}: machine_type {spec.machine_types} needs num_gpus >= 1, "
            f"got {spec.num_gpus}"
        )
    device: dict[str, Any] = {"Name": "nvidia/gpu", "Count": spec.num_gpus}
    constraints: list[dict[str, str]] = []
    patterns = [t.gpu_model_pattern for t in types]
    if all(patterns):
        # Concatenation binds tighter than '|', so joining whole patterns is always sound.
        pattern = "|".join(dict.fromkeys(p for p in patterns if p))
        constraints.append({"LTarget": "${device.model}", "Operand": "regexp", "RTarget": pattern})
    floors = [t.gpu_memory_mib for t in types]
    if all(floors):
        # ${device.attr.memory} is MiB as NVML reports it: an H100 80GB has 81559, under 80 GiB.
        floor = min(f for f in floors if f)
        constraints.append(
            {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": f"{floor} MiB"}
        )
    if constraints:
        device["Constraints"] = constraints
    return device
