"""Canonicalization of a Nomad job as the server does it (defaults of NOMAD_CONSUL.md)."""

from __future__ import annotations

import copy
from typing import Any

S = 1_000_000_000
MIN = 60 * S

_RESTART = {"Attempts": 2, "Interval": 30 * MIN, "Delay": 15 * S, "Mode": "fail"}
_RESCHEDULE = {
    "Attempts": 0,
    "Interval": 0,
    "Delay": 30 * S,
    "DelayFunction": "exponential",
    "MaxDelay": 60 * MIN,
    "Unlimited": True,
}
_UPDATE = {
    "Stagger": 30 * S,
    "MaxParallel": 1,
    "HealthCheck": "checks",
    "MinHealthyTime": 10 * S,
    "HealthyDeadline": 5 * MIN,
    "ProgressDeadline": 10 * MIN,
    "Canary": 0,
    "AutoRevert": False,
    "AutoPromote": False,
}
# Fields the server owns: a re-registration that differs only here is not a new version.
SERVER_FIELDS = (
    "Version",
    "Status",
    "StatusDescription",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
    "Stable",
    "Stop",
)


def _defaults(target: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    for key, value in defaults.items():
        if target.get(key) is None:
            target[key] = copy.deepcopy(value)
    return target


def canonicalize(raw: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``raw`` with the server's defaults written in."""
    job = copy.deepcopy(raw)
    _defaults(
        job,
        {
            "Name": job["ID"],
            "Type": "service",
            "Namespace": "default",
            "Region": "global",
            "NodePool": "default",
            "Priority": 50,
            "Meta": {},
            "Constraints": [],
            "Affinities": [],
            "TaskGroups": [],
        },
    )
    if not job.get("Datacenters"):
        job["Datacenters"] = ["*"]
    job_update = job.get("Update")
    if job_update is None and job["Type"] == "service":
        job_update = dict(_UPDATE)
    job["Update"] = _defaults(dict(job_update), _UPDATE) if job_update is not None else None
    for group in job["TaskGroups"]:
        _group(group, job)
    return job


def _group(group: dict[str, Any], job: dict[str, Any]) -> None:
    scaling = group.get("Scaling")
    if group.get("Count") is None:
        low = scaling.get("Min") if isinstance(scaling, dict) else None
        group["Count"] = 1 if low is None else low
    if isinstance(scaling, dict):
        _defaults(scaling, {"Enabled": True, "Min": group["Count"], "Type": "horizontal"})
    _defaults(group, {"Meta": {}, "Networks": [], "Services": [], "Constraints": []})
    group["RestartPolicy"] = _defaults(dict(group.get("RestartPolicy") or {}), _RESTART)
    group["ReschedulePolicy"] = _defaults(dict(group.get("ReschedulePolicy") or {}), _RESCHEDULE)
    group["EphemeralDisk"] = _defaults(dict(group.get("EphemeralDisk") or {}), {"SizeMB": 300})
    if job["Update"] is not None or group.get("Update") is not None:
        merged = {**(job["Update"] or {}), **(group.get("Update") or {})}
        group["Update"] = _defaults(merged, _UPDATE)
    for service in group["Services"]:
        _defaults(service, {"Provider": "consul", "Tags": [], "Meta": {}, "Checks": []})
    for task in group.get("Tasks") or []:
        _defaults(task, {"Env": {}, "Meta": {}, "KillTimeout": 5 * S, "KillSignal": ""})
        task["Resources"] = _defaults(
            dict(task.get("Resources") or {}), {"CPU": 100, "MemoryMB": 300, "Devices": []}
        )
        task["LogConfig"] = _defaults(
            dict(task.get("LogConfig") or {}), {"MaxFiles": 10, "MaxFileSizeMB": 10}
        )


def spec_of(job: dict[str, Any]) -> dict[str, Any]:
    """The user-owned part of a canonical job, for comparing versions."""
    return {k: v for k, v in job.items() if k not in SERVER_FIELDS}


def _task_meta(job: dict[str, Any], group: dict[str, Any]) -> list[dict[str, Any]]:
    """Each task's Meta merged over its group's over the job's, as ``Job.CombinedTaskMeta``."""
    return [
        {**(job.get("Meta") or {}), **(group.get("Meta") or {}), **(task.get("Meta") or {})}
        for task in group.get("Tasks") or []
    ]


def destructive(
    old_job: dict[str, Any],
    new_job: dict[str, Any],
    old_group: dict[str, Any],
    new_group: dict[str, Any],
) -> bool:
    """A change that needs new allocations (anything but Count, Scaling or Update).

    The job's Meta counts too: Nomad compares each task's meta merged with the group's and the
    job's (``Job.CombinedTaskMeta``; scheduler/util.go:249-253 at hashicorp/nomad aa026cc9), so
    a change of the job's Meta alone replaces every allocation.
    """
    ignore = ("Count", "Scaling", "Update")
    if _task_meta(old_job, old_group) != _task_meta(new_job, new_group):
        return True
    return {k: v for k, v in old_group.items() if k not in ignore} != {
        k: v for k, v in new_group.items() if k not in ignore
    }
