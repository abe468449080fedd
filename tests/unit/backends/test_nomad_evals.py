"""Reading placement failures from a job's evaluations (shapes as Nomad's API returns them)."""

from __future__ import annotations

from itertools import permutations
from typing import Any

from yurt.backends.nomad.evals import placed_since, reasons, unplaced

GROUP = "runner"

MISSING_GPU: dict[str, Any] = {
    "NodesEvaluated": 3,
    "NodesFiltered": 3,
    "NodesInPool": 3,
    "NodesAvailable": {"dc1": 3},
    "ClassFiltered": None,
    "ConstraintFiltered": {"missing devices": 3},
    "NodesExhausted": 0,
    "ClassExhausted": None,
    "DimensionExhausted": None,
    "QuotaExhausted": None,
    "CoalescedFailures": 1,
}

BUSY_GPU: dict[str, Any] = {
    **MISSING_GPU,
    "NodesFiltered": 2,
    "ConstraintFiltered": {"missing devices": 2},
    "NodesExhausted": 1,
    "DimensionExhausted": {"devices: no devices match request": 1},
    "CoalescedFailures": 0,
}


def evaluation(
    create_index: int, status: str, failed: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "ID": f"eval-{create_index}",
        "Status": status,
        "CreateIndex": create_index,
        "FailedTGAllocs": {GROUP: failed} if failed is not None else None,
        **extra,
    }


def test_no_failure_no_problem() -> None:
    assert unplaced([evaluation(5, "complete"), evaluation(7, "pending")], GROUP) is None
    assert unplaced([], GROUP) is None


def test_every_node_filtered_is_final_and_worded_as_nomad_does() -> None:
    """The failing eval and its blocked eval: the latest failing one is reported."""
    found = unplaced(
        [
            evaluation(12, "blocked", MISSING_GPU, TriggeredBy="queued-allocs"),
            evaluation(11, "complete", MISSING_GPU, BlockedEval="eval-12"),
            evaluation(4, "complete"),
        ],
        GROUP,
    )
    assert found is not None
    assert (found.eval_id, found.count, found.final) == ("eval-12", 2, True)
    assert found.reasons == 'Constraint "missing devices": 3 nodes excluded by filter'


def test_exhausted_devices_can_clear_so_are_not_final() -> None:
    found = unplaced([evaluation(3, "complete", BUSY_GPU)], GROUP)
    assert found is not None and not found.final
    assert found.reasons == (
        'Constraint "missing devices": 2 nodes excluded by filter; '
        "Resources exhausted on 1 node; "
        'Dimension "devices: no devices match request" exhausted on 1 node'
    )


def test_a_later_complete_eval_without_failures_clears_it() -> None:
    """The blocked eval placed everything (or the Count went to 0): nothing is failing."""
    evals = [
        evaluation(11, "complete", MISSING_GPU, BlockedEval="eval-12"),
        evaluation(12, "blocked", MISSING_GPU),  # a stale stored status
        evaluation(20, "complete"),
    ]
    assert unplaced(evals, GROUP) is None
    # Pending and cancelled evaluations after it do not clear it.
    still = [evals[0], evaluation(13, "pending"), evaluation(14, "canceled")]
    assert unplaced(still, GROUP) is not None


def test_other_groups_are_not_ours() -> None:
    other = {"ID": "e", "Status": "complete", "CreateIndex": 3, "FailedTGAllocs": {"x": BUSY_GPU}}
    assert unplaced([other], GROUP) is None


def test_no_eligible_node_and_empty_datacenters() -> None:
    metric = {"NodesEvaluated": 0, "NodesAvailable": {"dc2": 0, "dc1": 0}}
    assert reasons(metric) == (
        "No nodes were eligible for evaluation; "
        'No nodes are available in datacenter "dc1"; '
        'No nodes are available in datacenter "dc2"'
    )
    # No eligible node (down, draining, restarting) may pass: callers keep waiting.
    found = unplaced([evaluation(1, "complete", metric)], GROUP)
    assert found is not None and not found.final


def test_quota_and_class_lines() -> None:
    metric = {
        "NodesEvaluated": 2,
        "ClassFiltered": {"gpu": 1},
        "ClassExhausted": {"cpu": 2},
        "QuotaExhausted": ["memory exhausted (2048 needed > 1024 limit)"],
    }
    assert reasons(metric) == (
        'Class "gpu": 1 node excluded by filter; Class "cpu" exhausted on 2 nodes; '
        'Quota limit hit "memory exhausted (2048 needed > 1024 limit)"'
    )
    found = unplaced([evaluation(1, "complete", metric)], GROUP)
    assert found is not None and not found.final  # a quota can be raised or freed


def test_a_blocked_eval_cancelled_by_a_later_success_is_history() -> None:
    """Nomad cancels the blocked eval when another succeeds, keeping its FailedTGAllocs."""
    evals = [
        evaluation(11, "complete", MISSING_GPU, BlockedEval="eval-12"),
        evaluation(12, "canceled", MISSING_GPU, StatusDescription='evaluation "e" successful'),
        evaluation(15, "complete"),
    ]
    assert unplaced(evals, GROUP) is None


def test_a_count_lowered_to_0_clears_it_until_a_raise_fails_again() -> None:
    """The scheduler lowers an unplaced Count to 0 once nobody waits: Nomad's evaluation of it
    succeeds and cancels the blocked one, so nothing is failing; the next raise fails again and
    is reported with its own evaluation, however the list is ordered."""
    failed = evaluation(11, "complete", MISSING_GPU, BlockedEval="eval-12")
    cancelled = evaluation(
        12, "canceled", MISSING_GPU, StatusDescription='evaluation "eval-13" successful'
    )
    lowered = evaluation(13, "complete", TriggeredBy="job-scaling")
    for listed in permutations([failed, cancelled, lowered]):
        assert unplaced(listed, GROUP) is None
    raised = evaluation(20, "complete", MISSING_GPU, BlockedEval="eval-21")
    blocked = evaluation(21, "blocked", MISSING_GPU, TriggeredBy="queued-allocs")
    for listed in permutations([failed, cancelled, lowered, raised, blocked]):
        found = unplaced(listed, GROUP)
        assert found is not None and (found.eval_id, found.final) == ("eval-21", True)


def test_placed_since_the_failure_or_still_running() -> None:
    """Anything placed after the failing eval (or still live) means it may fit after all."""
    found = unplaced([evaluation(11, "complete", MISSING_GPU)], GROUP)
    assert found is not None and found.create_index == 11
    old_gone = {"CreateIndex": 5, "ClientStatus": "complete", "DesiredStatus": "stop"}
    old_live = {"CreateIndex": 5, "ClientStatus": "running", "DesiredStatus": "run"}
    new_failed = {"CreateIndex": 14, "ClientStatus": "failed", "DesiredStatus": "run"}
    assert not placed_since([old_gone], found)
    assert placed_since([old_gone, old_live], found)
    assert placed_since([new_failed], found)
