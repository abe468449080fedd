"""The Consul service of an app's runners and its health check, in the Nomad job. Pure.

Discovery finds runners by this service's tags and meta; its check decides when a runner is
routable and, through ``CheckRestart``, when Nomad restarts it.
"""

from __future__ import annotations

from typing import Any

from yurt.backends.nomad.naming import PORT_LABEL, PayloadRef, ns
from yurt.config import NomadConfig
from yurt.spec import AppSpec

HEALTH_PATH = "/_yurt/health"

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
CHECK_RESTART_LIMIT = 3
# Source lines cited for the health check and ShutdownDelay are those of hashicorp/nomad@aa026cc9.
# The runner's own check timeout (HealthCheck.timeout_seconds' default, and the local backend's
# HealthConfig.timeout): a Consul check that gives up sooner fails a runner that is fine.
RUNNER_CHECK_TIMEOUT_S = 5.0
# Nomad refuses a check Timeout under one second (nomad/structs/services.go:53 minCheckTimeout).
MIN_CHECK_TIMEOUT_S = 1.0
# The runner's liveness-only answer, for a HealthCheck declared with call_regularly=False (as
# the local backend polls it). Nomad keeps the query: createCheckReg resolves Path with
# url.Parse + ResolveReference (command/agent/consul/service_client.go:2054-2058).
BASIC_HEALTH_PATH = HEALTH_PATH + "?basic=1"


def service(
    name: str,
    app_id: str,
    owner: str,
    spec: AppSpec,
    payload: PayloadRef,
    config: NomadConfig,
    grace: int,
) -> dict[str, Any]:
    """The group's Consul service: the runner's port, yurt's tags and meta, one health check."""
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
        "Checks": [check(spec, config, grace)],
    }


def check(spec: AppSpec, config: NomadConfig, grace: int) -> dict[str, Any]:
    """The group service's Consul HTTP check, shaped by the app's ``HealthCheck``.

    With a HealthCheck, Consul turns the check critical (the runner unroutable) only after
    ``failure_threshold`` failures in a row (``FailuresBeforeCritical``; Consul's
    StatusHandler.updateCheck in agent/checks/check.go), waits ``timeout_seconds`` for an
    answer, and asks ``?basic=1`` when the app's check is not to be called regularly.
    check_restart then restarts at once (``Limit`` 1: Nomad restarts after ``Interval x
    (Limit-1)`` unhealthy, client/serviceregistration/watcher.go:197), so a runner ends after
    the same failures as under the local backend; its ``Grace`` covers ``start_period_seconds``
    as well as the startup. Without one: today's policy (critical at the first failure, a
    restart after three intervals), with a Timeout no shorter than the runner's own 5 s.
    ``grace`` is the startup grace of ``timings``, in nanoseconds.
    """
    endpoint = spec.health_check
    user = endpoint.health_check if endpoint is not None else None
    if user is None:
        path = HEALTH_PATH
        timeout = max(config.check_timeout, RUNNER_CHECK_TIMEOUT_S)
        failures = 0
        limit = CHECK_RESTART_LIMIT
    else:
        path = HEALTH_PATH if user.call_regularly else BASIC_HEALTH_PATH
        timeout = max(user.timeout_seconds, MIN_CHECK_TIMEOUT_S)
        failures = user.failure_threshold
        limit = 1
        # Nomad's grace starts when the allocation is created (nomad#25318), so the start
        # period gets the same slack as startup_timeout does.
        grace = max(grace, ns(user.start_period_seconds + STARTUP_SLACK_S))
    return {
        "Name": "yurt-health",
        "Type": "http",
        "Protocol": "http",
        "Method": "GET",
        "Path": path,
        "Interval": ns(config.check_interval),
        "Timeout": ns(timeout),
        "InitialStatus": "critical",
        "SuccessBeforePassing": 0,
        "FailuresBeforeCritical": failures,
        # Liveness: a runner whose health stays failing is restarted, but not while it may
        # still be loading (Grace covers startup_timeout).
        "CheckRestart": {"Limit": limit, "Grace": grace, "IgnoreWarnings": False},
    }
