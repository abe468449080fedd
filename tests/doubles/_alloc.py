"""One allocation of the Nomad double: its record, its environment and its task process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_INTERP = re.compile(r"\$\{([^}]+)\}")
NS = 1_000_000_000


def now_ns() -> int:
    return time.time_ns()


@dataclass
class Allocation:
    """What the double knows of one allocation; ``stub()``/``full()`` are its API shapes."""

    job_id: str
    group: str
    index: int
    job_version: int
    job: dict[str, Any]
    create_index: int
    work_dir: Path
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_status: str = "pending"
    desired_status: str = "run"
    desired_description: str = ""
    modify_index: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    gpus_model: str = ""
    task_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    create_time: int = field(default_factory=now_ns)
    healthy: bool | None = None
    healthy_since: float | None = None
    deployment_id: str = ""
    service_ids: list[str] = field(default_factory=list)
    check_ids: list[str] = field(default_factory=list)
    previous: str = ""
    next: str = ""
    reschedules: int = 0
    held: bool = False  # failed, its reschedule held back by a failed deployment
    proc: Process | None = None
    supervisor: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.job_id}.{self.group}[{self.index}]"

    @property
    def group_spec(self) -> dict[str, Any]:
        return next(g for g in self.job["TaskGroups"] if g["Name"] == self.group)

    @property
    def task(self) -> dict[str, Any]:
        task: dict[str, Any] = self.group_spec["Tasks"][0]
        return task

    @property
    def dir(self) -> Path:
        return self.work_dir / "allocs" / self.id

    @property
    def live(self) -> bool:
        """Holds its name index: desired to run and not yet replaced by a reschedule."""
        return self.desired_status == "run" and not self.next

    @property
    def terminal(self) -> bool:
        return self.client_status in ("complete", "failed", "lost")

    def event(self, kind: str, message: str = "", **extra: Any) -> None:
        state = self.task_states[self.task["Name"]]
        state["Events"].append(
            {"Type": kind, "Time": now_ns(), "DisplayMessage": message, "Details": {}, **extra}
        )

    def stub(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "EvalID": str(uuid.uuid5(uuid.NAMESPACE_OID, self.id)),
            "Name": self.name,
            "Namespace": self.job.get("Namespace", "default"),
            "NodeID": "00000000-0000-4000-8000-000000000001",
            "NodeName": "node-1",
            "JobID": self.job_id,
            "JobType": self.job.get("Type", "service"),
            "JobVersion": self.job_version,
            "TaskGroup": self.group,
            "DesiredStatus": self.desired_status,
            "DesiredDescription": self.desired_description,
            "ClientStatus": self.client_status,
            "ClientDescription": "",
            "TaskStates": self.task_states,
            "DeploymentStatus": None
            if self.healthy is None
            else {"Healthy": self.healthy, "Timestamp": now_ns()},
            "FollowupEvalID": "",
            "PreviousAllocation": self.previous,
            "NextAllocation": self.next,
            "RescheduleTracker": None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time,
            "ModifyTime": now_ns(),
        }

    def full(self, node_ip: str) -> dict[str, Any]:
        out = self.stub()
        out["Job"] = self.job
        out["DeploymentID"] = self.deployment_id
        shared_ports = [
            {"Label": label, "Value": port, "To": 0, "HostIP": node_ip}
            for label, port in self.ports.items()
        ]
        devices = (
            [{"Vendor": "nvidia", "Type": "gpu", "Name": self.gpus_model, "DeviceIDs": self.gpus}]
            if self.gpus
            else []
        )
        task = self.task
        out["AllocatedResources"] = {
            "Tasks": {
                task["Name"]: {
                    "Cpu": {"CpuShares": task["Resources"]["CPU"]},
                    "Memory": {"MemoryMB": task["Resources"]["MemoryMB"]},
                    "Devices": devices,
                }
            },
            "Shared": {"Ports": shared_ports, "DiskMB": 300},
        }
        return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """``${NOMAD_PORT_http}``-style references replaced as Nomad's taskenv does."""

    def one(found: re.Match[str]) -> str:
        key = found.group(1)
        if key.startswith("env."):
            key = key[4:]
        return env.get(key, found.group(0))

    return _INTERP.sub(one, text)


def task_env(alloc: Allocation, node_ip: str, region: str, dc: str) -> dict[str, str]:
    """The NOMAD_* variables of NOMAD_CONSUL.md, then the task's Env interpolated over them."""
    task = alloc.task
    job = alloc.job
    alloc_dir = alloc.dir / "alloc"
    task_dir = alloc.dir / task["Name"]
    env: dict[str, str] = {
        "NOMAD_ALLOC_ID": alloc.id,
        "NOMAD_SHORT_ALLOC_ID": alloc.id[:8],
        "NOMAD_ALLOC_NAME": alloc.name,
        "NOMAD_ALLOC_INDEX": str(alloc.index),
        "NOMAD_JOB_ID": alloc.job_id,
        "NOMAD_JOB_NAME": job.get("Name", alloc.job_id),
        "NOMAD_GROUP_NAME": alloc.group,
        "NOMAD_TASK_NAME": task["Name"],
        "NOMAD_NAMESPACE": job.get("Namespace", "default"),
        "NOMAD_REGION": region,
        "NOMAD_DC": dc,
        "NOMAD_ALLOC_DIR": str(alloc_dir),
        "NOMAD_TASK_DIR": str(task_dir / "local"),
        "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
        "NOMAD_CPU_LIMIT": str(task["Resources"]["CPU"]),
        "NOMAD_MEMORY_LIMIT": str(task["Resources"]["MemoryMB"]),
    }
    for label, port in alloc.ports.items():
        env[f"NOMAD_PORT_{label}"] = str(port)
        env[f"NOMAD_HOST_PORT_{label}"] = str(port)
        env[f"NOMAD_IP_{label}"] = node_ip
        env[f"NOMAD_ADDR_{label}"] = f"{node_ip}:{port}"
        env[f"NOMAD_HOST_ADDR_{label}"] = f"{node_ip}:{port}"
    meta = {**(job.get("Meta") or {}), **(alloc.group_spec.get("Meta") or {})}
    meta.update(task.get("Meta") or {})
    for key, value in meta.items():
        env[f"NOMAD_META_{key}"] = value
    # The task's Env is interpolated before the device hook runs (NOMAD_CONSUL.md), so it
    # cannot see NVIDIA_VISIBLE_DEVICES.
    for key, value in (task.get("Env") or {}).items():
        env[key] = interpolate(value, env)
    if alloc.gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(alloc.gpus)
    return env


def make_dirs(alloc: Allocation) -> tuple[Path, Path]:
    """Creates the alloc and task dirs; returns (stdout file, stderr file)."""
    task = alloc.task["Name"]
    logs = alloc.dir / "alloc" / "logs"
    for path in (logs, alloc.dir / "alloc" / "data", alloc.dir / task / "local"):
        path.mkdir(parents=True, exist_ok=True)
    (alloc.dir / task / "secrets").mkdir(mode=0o700, exist_ok=True)
    return logs / f"{task}.stdout.0", logs / f"{task}.stderr.0"


class Process:
    """A task process, waited on by polling: no child watcher, nothing lost to a cancellation."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        while True:
            code = self.popen.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)


def start_process(alloc: Allocation, env: dict[str, str]) -> Process:
    """raw_exec: ``command`` + ``args`` (interpolated) in a new session, logs to the alloc dir.

    Synchronous on purpose: the process exists exactly when the caller holds it.
    """
    config = alloc.task.get("Config") or {}
    args = [interpolate(str(a), env) for a in config.get("args") or []]
    stdout, stderr = make_dirs(alloc)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    work_dir = config.get("work_dir") or str(alloc.dir / alloc.task["Name"])
    with stdout.open("ab") as out, stderr.open("ab") as err:
        popen = subprocess.Popen(
            [interpolate(config["command"], env), *args],
            env={**base, **env},
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=work_dir,
            start_new_session=True,
        )
    return Process(popen)


def signal_group(proc: Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def kill_process(proc: Process, sig_name: str, kill_timeout: float) -> None:
    """KillSignal to the process group, SIGKILL after KillTimeout, then reap."""
    if proc.returncode is None:
        signal_group(proc, getattr(signal, sig_name or "SIGINT", signal.SIGINT))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), kill_timeout)
        if proc.returncode is None:
            signal_group(proc, signal.SIGKILL)
            await proc.wait()
    # Children left in the group die with it, as Nomad's executor kills the whole group.
    signal_group(proc, signal.SIGKILL)
