"""Evaluations for the Nomad double: created by each write, settled by the next reconcile tick.

Reproduces these facts of Nomad (``nomad/structs``, ``scheduler/generic_sched.go``,
``scheduler/feasible``; see NOMAD_CONSUL.md):

- Register, a scale with a Count, an allocation stop and a deregister each create an evaluation
  (``TriggeredBy`` job-register / job-scaling / alloc-stop / job-deregister) whose ID the write
  returns. It is ``pending`` until the scheduler runs, here on the next reconcile tick.
- An evaluation whose placements failed ends ``complete`` with ``FailedTGAllocs`` (an
  AllocationMetric per group: ``CoalescedFailures`` is the failed placements less one; empty
  maps are JSON null) and ``BlockedEval`` naming a ``blocked`` evaluation (TriggeredBy
  queued-allocs) that is run again when capacity changes.
- A node without enough GPUs matching the device request is filtered with the reason
  ``missing devices``; one with them all in use is exhausted on the dimension
  ``devices: no devices match request``.
- A blocked evaluation run again that places everything ends ``complete`` with no
  ``FailedTGAllocs``; one run again that still fails stays ``blocked`` with the figures of its
  first run. When another evaluation of the job completes without failures (a Count lowered to
  0 is one), the blocked one is ``canceled`` ('evaluation "<the successful one's id>"
  successful') and keeps its ``FailedTGAllocs`` (hashicorp/nomad aa026cc9,
  ``nomad/state/state_store.go:3522-3550``, ``nestedUpsertEval``).
- A second blocked evaluation for a job replaces the first, which is ``canceled`` ("existing
  blocked evaluation exists for job"; ``nomad/blocked_evals.go:298-343``,
  ``processBlockJobDuplicate``, and ``nomad/leader.go:1165-1170``).
- ``GET /v1/job/:id/evaluations`` lists them in no particular order (shuffled here, so that a
  reader must sort by CreateIndex).

Simpler than Nomad: one node in one datacenter, failures are only about GPUs, and evaluations
are never garbage-collected.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

MISSING = "missing devices"
EXHAUSTED = "devices: no devices match request"


def metric(datacenter: str, *, filtered: bool, failed: int) -> dict[str, Any]:
    """The AllocationMetric of ``failed`` placements on the double's one node."""
    return {
        "NodesEvaluated": 1,
        "NodesFiltered": 1 if filtered else 0,
        "NodesInPool": 1,
        "NodePool": "default",
        "NodesAvailable": {datacenter: 1},
        "ClassFiltered": None,
        "ConstraintFiltered": {MISSING: 1} if filtered else None,
        "NodesExhausted": 0 if filtered else 1,
        "ClassExhausted": None,
        "DimensionExhausted": None if filtered else {EXHAUSTED: 1},
        "QuotaExhausted": None,
        "ResourcesExhausted": None,
        "Scores": None,
        "ScoreMetaData": None,
        "AllocationTime": 48_000,
        "CoalescedFailures": failed - 1,
    }


class Evaluations:
    """Every job's evaluations."""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.by_id: dict[str, dict[str, Any]] = {}

    def create(self, job_id: str, triggered_by: str, index: int, status: str = "pending") -> str:
        """A new evaluation of ``job_id``; returns its ID."""
        eval_id = str(uuid.uuid4())
        self.by_id[eval_id] = {
            "ID": eval_id,
            "Namespace": self.namespace,
            "Priority": 50,
            "Type": "service",
            "TriggeredBy": triggered_by,
            "JobID": job_id,
            "Status": status,
            "StatusDescription": "",
            "BlockedEval": "",
            "PreviousEval": "",
            "NextEval": "",
            "FailedTGAllocs": None,
            "QueuedAllocations": None,
            "QuotaLimitReached": "",
            "SnapshotIndex": index,
            "CreateIndex": index,
            "ModifyIndex": index,
        }
        return eval_id

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        """The job's evaluations, in no particular order."""
        found = [dict(e) for e in self.by_id.values() if e["JobID"] == job_id]
        random.shuffle(found)
        return found

    def settle(self, job_id: str, failed: dict[str, dict[str, Any]], index: int) -> bool:
        """The scheduler ran for ``job_id`` with ``failed`` (group -> metric; empty: all
        placed). Returns whether any evaluation changed."""
        evals = [e for e in self.by_id.values() if e["JobID"] == job_id]
        pending = sorted((e for e in evals if e["Status"] == "pending"), key=_created)
        blocked = next((e for e in evals if e["Status"] == "blocked"), None)
        if not failed:
            for e in pending:
                e.update(Status="complete", FailedTGAllocs=None, ModifyIndex=index)
            if blocked is not None and pending:
                # Another evaluation succeeded: the state store cancels the blocked one,
                # keeping its figures and naming the first evaluation that succeeded.
                blocked.update(
                    Status="canceled",
                    StatusDescription=f'evaluation "{pending[0]["ID"]}" successful',
                    ModifyIndex=index,
                )
            elif blocked is not None:
                # Run again as capacity changed, and everything placed.
                blocked.update(Status="complete", FailedTGAllocs=None, ModifyIndex=index)
            return bool(pending) or blocked is not None
        if not pending:
            if blocked is not None:
                return False  # run again, still failing: blocked as it was, figures unchanged
            # A placement failed with no write behind it (a replacement).
            pending = [self.by_id[self.create(job_id, "alloc-failure", index)]]
        for e in pending:
            e.update(Status="complete", FailedTGAllocs=failed, ModifyIndex=index)
            new = self.create(job_id, "queued-allocs", index, status="blocked")
            self.by_id[new].update(
                FailedTGAllocs=failed,
                PreviousEval=e["ID"],
                StatusDescription="created to place remaining allocations",
            )
            e["BlockedEval"] = new
            if blocked is not None:
                # One blocked evaluation per job: the newer stays, the older is cancelled.
                blocked.update(
                    Status="canceled",
                    StatusDescription=f'existing blocked evaluation exists for job "{job_id}"',
                    ModifyIndex=index,
                )
            blocked = self.by_id[new]
        return True


def _created(evaluation: dict[str, Any]) -> int:
    return int(evaluation["CreateIndex"])
