"""Readings of Nomad allocation stubs (``GET /v1/job/:id/allocations``). Pure.

The name index (``job.group[N]``) that decides which allocation Nomad stops first, liveness,
which allocations Nomad counts against the group's Count, addresses, the ``RunnerView`` a stub
stands for, and why a runner's task ended.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from yurt.backends.base import RunnerState, RunnerView
from yurt.backends.nomad.naming import PORT_LABEL, TASK

TERMINAL = frozenset({"complete", "failed", "lost"})
RESCHEDULING = "rescheduling after a failure"  # the detail of a failed one Nomad still counts
_NAME_INDEX = re.compile(r"\[(\d+)\]$")


def name_index(name: str) -> int:
    """The allocation's name index (``job.group[N]`` -> N; NOMAD_ALLOC_INDEX), -1 if none."""
    found = _NAME_INDEX.search(name or "")
    return int(found.group(1)) if found else -1


def is_live(stub: dict[str, Any]) -> bool:
    """Placed or running, and Nomad still wants it to run."""
    return stub.get("ClientStatus") not in TERMINAL and stub.get("DesiredStatus") == "run"


def awaiting_reschedule(stub: dict[str, Any]) -> bool:
    """Failed, and Nomad has not replaced it yet: it still holds its place in the Count.

    Nomad's reconciler (``filterByRescheduleable``) keeps a failed allocation whose
    DesiredStatus is "run" and that has no NextAllocation among the allocations the Count
    covers, until its reschedule places a replacement (after ReschedulePolicy's Delay, or never
    once its attempts are spent); a lower Count stops it like any other, by its name index.
    """
    return (
        stub.get("ClientStatus") == "failed"
        and stub.get("DesiredStatus") == "run"
        and not stub.get("NextAllocation")
    )


def counted(stub: dict[str, Any]) -> bool:
    """Whether Nomad counts the allocation against the group's Count: live, or failed and
    waiting to be rescheduled. When the Count drops, Nomad stops the highest index among these.
    """
    return is_live(stub) or awaiting_reschedule(stub)


def alloc_address(stub: dict[str, Any]) -> tuple[str, int]:
    """The runner's host and port from the allocation's shared ports, else ("", 0)."""
    shared = (stub.get("AllocatedResources") or {}).get("Shared") or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == PORT_LABEL:
            return str(port.get("HostIP") or ""), int(port.get("Value") or 0)
    return "", 0


def task_state(stub: dict[str, Any]) -> dict[str, Any]:
    """The runner task's state in an allocation stub ({} before the client reports one)."""
    state: dict[str, Any] = (stub.get("TaskStates") or {}).get(TASK) or {}
    return state


def deployment_healthy(stub: dict[str, Any]) -> bool:
    """Nomad's own verdict: the allocation passed its checks for MinHealthyTime."""
    return bool((stub.get("DeploymentStatus") or {}).get("Healthy") is True)


def view_of(
    app_id: str,
    stub: dict[str, Any],
    *,
    healthy: bool,
    draining: bool,
    now: float,
    mono: float,
    address: tuple[str, int] | None = None,
) -> RunnerView | None:
    """The ``RunnerView`` of one allocation, or None for a terminal one Nomad no longer counts.

    A failed allocation waiting to be rescheduled is PENDING ("rescheduling after a failure"):
    it holds a place in the Count, so the scheduler counts it, and it is never routable, so a
    lower Count may take it. ``now``/``mono`` are wall and monotonic clocks read together:
    ``started_at`` is on the monotonic clock, like the local backend's. ``address`` stands in
    when the stub has no ports.
    """
    status = stub.get("ClientStatus")
    detail = str(stub.get("DesiredDescription") or "")
    if status in TERMINAL and not awaiting_reschedule(stub):
        return None
    if draining or stub.get("DesiredStatus") != "run":
        state = RunnerState.DRAINING
    elif status in TERMINAL:
        state, detail = RunnerState.PENDING, RESCHEDULING
    elif status == "running":
        state = RunnerState.IDLE if healthy else RunnerState.SETUP
    else:
        state = RunnerState.PENDING
    host, port = alloc_address(stub)
    if not port and address is not None:
        host, port = address
    created = float(stub.get("CreateTime") or 0) / 1e9
    started_at = mono - max(0.0, now - created) if created else mono
    return RunnerView(
        str(stub["ID"]),
        app_id,
        state,
        host,
        port,
        None,
        started_at,
        detail,
    )


def stop_order(stubs: Iterable[dict[str, Any]]) -> list[str]:
    """The allocations Nomad counts, in the order it stops them as the Count drops.

    Nomad's reconciler (``computeStop`` -> ``nameIndex.Highest``) stops the highest name
    indexes among the allocations it counts (``counted``: a failed one waiting to be
    rescheduled too); among equal indexes the newest goes first here.
    """
    held = [s for s in stubs if counted(s)]
    held.sort(key=lambda s: (name_index(str(s.get("Name"))), s.get("CreateIndex") or 0))
    return [str(s["ID"]) for s in reversed(held)]


def stops_for(
    stubs: Iterable[dict[str, Any]], candidates: Collection[str], *, leaving: Collection[str] = ()
) -> list[str]:
    """The runners a lower Count stops, highest name index first: candidates and failed ones.

    Walks down the allocations Nomad counts from the highest index and ends at the first live
    runner that is not a candidate: lowering the Count past it would stop it instead. A failed
    allocation waiting to be rescheduled serves nobody: it is taken as if it were a candidate.
    ``leaving`` runners (a lower Count is already stopping them) are stepped over.
    """
    stubs = list(stubs)
    failed = {str(s["ID"]) for s in stubs if awaiting_reschedule(s)}
    out: list[str] = []
    for runner_id in stop_order(stubs):
        if runner_id in leaving:
            continue
        if runner_id not in candidates and runner_id not in failed:
            break
        out.append(runner_id)
    return out


def health_killed(stub: dict[str, Any]) -> bool:
    """Whether Nomad restarted or killed the task for failing health checks (check_restart)."""
    for event in task_state(stub).get("Events") or []:
        reason = f"{event.get('RestartReason', '')} {event.get('KillReason', '')}".lower()
        if "health" in reason or "unhealthy" in reason:
            return True
    return False


def exit_detail(stub: dict[str, Any]) -> str:
    """A line on how the runner task ended, from Nomad's task events."""
    for event in reversed(task_state(stub).get("Events") or []):
        if event.get("Type") in ("Terminated", "Driver Failure", "Setup Failure", "Killed"):
            text = event.get("DisplayMessage") or event.get("DriverError") or ""
            code = event.get("ExitCode")
            return f"{event['Type']}: {text or f'exit code {code}'}".strip()
    return f"allocation {stub.get('ClientStatus', '?')}: {stub.get('ClientDescription') or ''}"
