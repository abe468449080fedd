"""Placement in the Nomad job: datacenters, node pool, constraints, the raw_exec user, volumes.

Golden files ``nomad_golden/placement-*.json`` pin whole jobs with every placement setting
(rewrite them with ``YURT_UPDATE_GOLDEN=1``); every job built here passes the shared
``nomad_validate.py`` and the Nomad double's validator (the ``validate`` fixture).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_jobspec import CONFIG, DOCKER, GOLDEN, PAYLOAD, group, task, validate

import yurt
from yurt.backends.nomad.jobspec import (
    APP_DATA_DIR,
    build_job,
    placement,
    register_body,
    runner_args,
)
from yurt.config import NomadConfig, ServerConfig
from yurt.errors import AppDefinitionError
from yurt.machines import with_overrides
from yurt.spec import build_spec

__all__ = ["validate"]  # the fixture, imported so that this module's tests get it

pytestmark = pytest.mark.usefixtures("isolated_imports")

NODE_CLASS = {"attribute": "${node.class}", "operator": "=", "value": "gpu-large"}
KERNEL = {"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"}
# What [machines] in a config file gives ServerConfig.machine_overrides().
MACHINES = ServerConfig(
    data_dir="/nonexistent",
    machines={
        "GPU-H100": {"node_pool": "gpu", "constraints": [NODE_CLASS, KERNEL]},
        "GPU-A100": {"node_pool": "gpu", "constraints": [NODE_CLASS, KERNEL]},
        "CPU": {"node_pool": "cpu"},
    },
).machine_overrides()
RAW_USER = CONFIG.model_copy(update={"datacenters": None, "user": "yurt-runner"})
HOST_VOLUME = NomadConfig.model_validate(
    DOCKER.model_dump()
    | {"datacenters": None, "volumes": {"team/cached": {"type": "host", "source": "hf-cache"}}}
)
CSI_VOLUME = NomadConfig.model_validate(
    DOCKER.model_dump()
    | {"volumes": {"*": {"type": "csi", "source": "models", "access_mode": None}}}
)


class Cached(yurt.App):
    machine_type = ["GPU-H100", "GPU-A100"]
    num_gpus = 1
    app_name = "cached"

    @yurt.endpoint("/")
    def run(self) -> None:
        return None


class Small(yurt.App):
    machine_type = "CPU"
    app_name = "small"

    @yurt.endpoint("/")
    def run(self) -> None:
        return None


def cached_job(config: NomadConfig, **kw: Any) -> dict[str, Any]:
    """The job of ``team/cached`` under ``config`` with MACHINES, datacenter ``east``."""
    return build_job(
        "team/cached",
        build_spec(Cached),
        PAYLOAD,
        config,
        machines=MACHINES,
        datacenters=("east",),
        **kw,
    )


GOLDEN_PLACEMENT: dict[str, Callable[[], dict[str, Any]]] = {
    "placement-raw_exec": lambda: cached_job(RAW_USER, count=1),
    "placement-docker": lambda: cached_job(HOST_VOLUME, count=1),
}


def placement_jobs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Jobs with each placement setting, for the validators."""
    for name, make in GOLDEN_PLACEMENT.items():
        yield name, make()
    yield "csi", cached_job(CSI_VOLUME)
    ro = CSI_VOLUME.model_copy(
        update={
            "volumes": {
                "*": CSI_VOLUME.volumes["*"].model_copy(
                    update={"read_only": True, "access_mode": "multi-node-reader-only"}
                )
            }
        }
    )
    yield "csi-read-only", cached_job(ro)
    small = build_spec(Small)
    yield "cpu-pool", build_job("team/small", small, PAYLOAD, RAW_USER, machines=MACHINES)


@pytest.mark.parametrize("name", sorted(GOLDEN_PLACEMENT))
def test_golden_placement(name: str) -> None:
    """A job with a node pool, constraints, a user or a volume equals its golden file."""
    job = GOLDEN_PLACEMENT[name]()
    path = GOLDEN / f"{name}.json"
    if os.environ.get("YURT_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(job, indent=2, sort_keys=True) + "\n")
    assert path.is_file(), f"{path} is missing; run with YURT_UPDATE_GOLDEN=1 to write it"
    assert json.loads(path.read_text()) == job


def test_placement_jobs_validate(validate: Callable[[dict[str, Any]], list[str]]) -> None:
    """Every job with placement settings, bare and wrapped, has no validator problems."""
    for name, job in placement_jobs():
        assert validate(job) == [], name
        assert validate(register_body(job)) == [], name


def test_node_pool_and_constraints_come_from_the_machine_type() -> None:
    """[machines] node_pool is the job's NodePool; its constraints are the group's, in Nomad's
    LTarget/Operand/RTarget form; a type without a pool keeps [nomad] node_pool."""
    job = cached_job(RAW_USER)
    assert job["NodePool"] == "gpu"
    assert group(job)["Constraints"] == [
        {"LTarget": "${node.class}", "Operand": "=", "RTarget": "gpu-large"},
        {"LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"},
    ]
    plain = build_job("team/cached", build_spec(Cached), PAYLOAD, CONFIG.model_copy())
    assert plain["NodePool"] == "default"
    assert "Constraints" not in group(plain)


def test_fallback_types_placed_apart_are_refused() -> None:
    """Fallback machine types with different pools or constraints cannot share one job."""
    machines = dict(MACHINES) | {"GPU-A100": {"node_pool": "a100"}}
    with pytest.raises(AppDefinitionError, match=r"GPU-A100: node_pool='a100'.*same"):
        placement(build_spec(Cached), with_overrides(machines), CONFIG)


def test_datacenters_follow_consul_unless_configured() -> None:
    """The job's Datacenters are the ones passed in (the Consul agent's), [nomad] datacenters
    when set, and Nomad's '*' only when neither is known."""
    spec = build_spec(Small)
    unset = CONFIG.model_copy(update={"datacenters": None})
    assert build_job("t/s", spec, PAYLOAD, unset, datacenters=("east",))["Datacenters"] == ["east"]
    assert build_job("t/s", spec, PAYLOAD, CONFIG, datacenters=("east",))["Datacenters"] == ["dc1"]
    assert build_job("t/s", spec, PAYLOAD, unset)["Datacenters"] == ["*"]


def test_user_is_the_raw_exec_tasks() -> None:
    """[nomad] user becomes the task's User; without it the task has none (the agent's)."""
    assert task(cached_job(RAW_USER))["User"] == "yurt-runner"
    assert "User" not in task(cached_job(CONFIG))


def test_volume_is_mounted_at_the_app_data_dir() -> None:
    """An app's volume is a group volume mounted at APP_DATA_DIR, with the usual caches under
    it; another app without an entry (and no '*') gets none."""
    job = cached_job(HOST_VOLUME)
    assert group(job)["Volumes"] == {
        "yurt-data": {
            "Name": "yurt-data",
            "Type": "host",
            "Source": "hf-cache",
            "ReadOnly": False,
            "Sticky": False,
            "PerAlloc": False,
            "AccessMode": "",
            "AttachmentMode": "",
        }
    }
    t = task(job)
    assert t["VolumeMounts"] == [
        {
            "Volume": "yurt-data",
            "Destination": APP_DATA_DIR,
            "ReadOnly": False,
            "PropagationMode": "private",
            "SELinuxLabel": "",
        }
    ]
    assert t["Env"]["YURT_APP_DATA_DIR"] == APP_DATA_DIR == "/data"
    assert t["Env"]["HF_HOME"] == "/data/huggingface"
    assert t["Env"]["TORCH_HOME"] == "/data/torch"
    assert t["Env"]["XDG_CACHE_HOME"] == "/data/cache"
    assert t["Env"]["FAL_MODEL_WEIGHTS_DIR"] == "/data/.fal/model_weights"
    other = build_job("team/small", build_spec(Small), PAYLOAD, HOST_VOLUME)
    assert "Volumes" not in group(other)
    assert "VolumeMounts" not in task(other)
    assert not {"HF_HOME", "TORCH_HOME", "YURT_APP_DATA_DIR"} & set(task(other)["Env"])


def test_csi_volume_is_shared_by_every_runner() -> None:
    """A CSI volume asks a mode that many runners on many nodes may share, as a file system."""
    volume = group(cached_job(CSI_VOLUME))["Volumes"]["yurt-data"]
    assert volume["Type"] == "csi"
    assert volume["AccessMode"] == "multi-node-multi-writer"
    assert volume["AttachmentMode"] == "file-system"


def test_runners_are_not_told_the_placement() -> None:
    """--machines carries the GPU and size changes, never node pools or constraints (whose
    ${...} Nomad would interpolate in a task's args)."""
    args = runner_args(PAYLOAD, MACHINES)
    assert "--machines" not in args
    changed = dict(MACHINES) | {"GPU-H100": {**MACHINES["GPU-H100"], "cpu_mhz": 4000}}
    told = json.loads(runner_args(PAYLOAD, changed)[-1])
    assert told == {"GPU-H100": {"cpu_mhz": 4000}}
