"""Reading a job's evaluations: can Nomad place its runners, and if not, why. Pure.

When a placement fails, the evaluation ends ``complete`` with ``FailedTGAllocs`` (an
AllocationMetric per task group) and Nomad creates a ``blocked`` evaluation, run again when the
cluster changes. Nothing is failing any more once an evaluation created after the last failing
one completes without failures (every evaluation reconciles the whole job). The reasons are
worded as ``nomad job status`` words its "Placement Failure" (``formatAllocMetrics``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from yurt.backends.nomad.allocs import is_live


@dataclass(frozen=True, slots=True)
class Unplaced:
    """Runners Nomad cannot place, and why."""

    eval_id: str
    create_index: int  # of that evaluation: allocations created later were placed after it
    count: int  # placements that failed
    reasons: str  # as ``nomad job status`` lists them, joined with "; "
    final: bool  # every node was filtered out: nothing fits until the cluster changes


def _create_index(evaluation: dict[str, Any]) -> int:
    try:
        return int(evaluation.get("CreateIndex") or 0)
    except (TypeError, ValueError):
        return 0


def _failed(evaluation: dict[str, Any], group: str) -> dict[str, Any] | None:
    failed = evaluation.get("FailedTGAllocs") or {}
    metric = failed.get(group) if isinstance(failed, dict) else None
    return metric if isinstance(metric, dict) else None


def unplaced(evaluations: Iterable[dict[str, Any]], group: str) -> Unplaced | None:
    """Why ``group`` has runners Nomad cannot place now; None when nothing is failing."""
    ordered = sorted(evaluations, key=_create_index)
    failing = next(
        (i for i in range(len(ordered) - 1, -1, -1) if _failed(ordered[i], group) is not None),
        None,
    )
    if failing is None:
        return None
    for later in ordered[failing + 1 :]:
        if later.get("Status") == "complete" and _failed(later, group) is None:
            return None
    metric = _failed(ordered[failing], group)
    assert metric is not None
    return Unplaced(
        eval_id=str(ordered[failing].get("ID", "")),
        create_index=_create_index(ordered[failing]),
        count=_int(metric.get("CoalescedFailures")) + 1,
        reasons=reasons(metric),
        final=_final(metric),
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _counts(metric: dict[str, Any], key: str) -> list[tuple[str, int]]:
    found = metric.get(key) or {}
    return sorted((str(k), _int(v)) for k, v in found.items()) if isinstance(found, dict) else []


def _final(metric: dict[str, Any]) -> bool:
    # No eligible node at all (down, draining, a client restarting) may be over in a minute:
    # only a cluster whose every node was looked at and filtered out lacks what is asked.
    evaluated = _int(metric.get("NodesEvaluated"))
    exhausted = _int(metric.get("NodesExhausted")) or metric.get("QuotaExhausted")
    return evaluated > 0 and not exhausted and _int(metric.get("NodesFiltered")) >= evaluated


def placed_since(allocations: Iterable[dict[str, Any]], found: Unplaced) -> bool:
    """Whether Nomad placed an allocation after ``found``'s evaluation, or one still runs.

    A blocked evaluation run again keeps the figures of its first run, so once anything was
    placed after it, "every node was filtered out" may no longer hold.
    """
    return any(_create_index(a) > found.create_index or is_live(a) for a in allocations)


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def reasons(metric: dict[str, Any]) -> str:
    """An AllocationMetric as the lines ``nomad job status`` prints, joined with "; "."""
    lines: list[str] = []
    if _int(metric.get("NodesEvaluated")) == 0:
        lines.append("No nodes were eligible for evaluation")
    lines += [
        f'No nodes are available in datacenter "{dc}"'
        for dc, n in _counts(metric, "NodesAvailable")
        if n == 0
    ]
    lines += [
        f'Class "{c}": {_nodes(n)} excluded by filter' for c, n in _counts(metric, "ClassFiltered")
    ]
    lines += [
        f'Constraint "{c}": {_nodes(n)} excluded by filter'
        for c, n in _counts(metric, "ConstraintFiltered")
    ]
    if exhausted := _int(metric.get("NodesExhausted")):
        lines.append(f"Resources exhausted on {_nodes(exhausted)}")
    lines += [f'Class "{c}" exhausted on {_nodes(n)}' for c, n in _counts(metric, "ClassExhausted")]
    lines += [
        f'Dimension "{d}" exhausted on {_nodes(n)}'
        for d, n in _counts(metric, "DimensionExhausted")
    ]
    quota = metric.get("QuotaExhausted") or []
    if isinstance(quota, list):
        lines += [f'Quota limit hit "{q}"' for q in quota]
    return "; ".join(lines) or "no reason given"


def ask_of(job: dict[str, Any], group: str) -> str:
    """What each runner of ``group`` asks of a node, e.g. ``2 nvidia/gpu (${device.model}
    regexp \\bH100\\b, ...), CPU 1000 MHz, 65536 MB`` (Nomad names only "missing devices")."""
    found = next((g for g in job.get("TaskGroups") or [] if g.get("Name") == group), None)
    tasks = (found or {}).get("Tasks") or [{}]
    resources = tasks[0].get("Resources") or {}
    parts = []
    for device in resources.get("Devices") or []:
        rules = ", ".join(
            f"{c.get('LTarget')} {c.get('Operand')} {c.get('RTarget')}"
            for c in device.get("Constraints") or []
        )
        parts.append(
            f"{device.get('Count', 1)} {device.get('Name')}" + (f" ({rules})" if rules else "")
        )
    if resources.get("CPU"):
        parts.append(f"CPU {resources['CPU']} MHz")
    if resources.get("MemoryMB"):
        parts.append(f"{resources['MemoryMB']} MB")
    return ", ".join(parts)
