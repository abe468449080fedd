"""The surge job that carries an app's new revision while it rolls."""

from __future__ import annotations

import time
from typing import Any

from yurt.backends.nomad.scaling import _App
from yurt.backends.nomad.surge import Surge, surge_id, surge_job


def job() -> dict[str, Any]:
    return {
        "ID": "yurt-o-app",
        "Name": "yurt-o-app",
        "TaskGroups": [
            {
                "Name": "runner",
                "Count": 0,
                "Scaling": {"Min": 0, "Max": 2},
                "Services": [{"Name": "yurt-o-app"}],
            }
        ],
    }


def test_surge_job_has_its_own_id_the_same_service_and_the_count() -> None:
    """The surge job is another job with the app's Consul service, at the given Count."""
    original = job()
    surge = surge_job(original, 2)
    assert surge["ID"] == surge["Name"] == surge_id("yurt-o-app") == "yurt-o-app-surge"
    assert surge["TaskGroups"][0]["Services"] == [{"Name": "yurt-o-app"}]
    assert surge["TaskGroups"][0]["Count"] == 2
    assert original["ID"] == "yurt-o-app" and original["TaskGroups"][0]["Count"] == 0


def test_surge_job_reads_its_own_variable() -> None:
    """A task may read its own job's Variable only: the surge job's template names its own."""
    original = job()
    original["TaskGroups"][0]["Tasks"] = [{"Name": "runner", "Templates": [{"EmbeddedTmpl": "x"}]}]
    [template] = surge_job(original, 1)["TaskGroups"][0]["Tasks"][0]["Templates"]
    assert 'nomadVar "nomad/jobs/yurt-o-app-surge"' in template["EmbeddedTmpl"]
    assert original["TaskGroups"][0]["Tasks"][0]["Templates"] == [{"EmbeddedTmpl": "x"}]


def test_surge_job_count_stays_within_scaling_max() -> None:
    """A Count above the new revision's maximum is brought down to it."""
    assert surge_job(job(), 5)["TaskGroups"][0]["Count"] == 2


class Allocations:
    """Answers ``allocations`` from a list of stub lists, one per call (the last repeats)."""

    def __init__(self, *replies: list[dict[str, Any]]) -> None:
        self.replies = list(replies)

    async def allocations(self, job_id: str) -> tuple[int, list[dict[str, Any]]]:
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return 1, reply

    async def evaluations(self, job_id: str) -> tuple[int, list[dict[str, Any]]]:
        return 1, []


class Healthy:
    """Every runner named here passed its checks once."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def was_healthy(self, app_id: str, runner_id: str) -> bool:
        return runner_id in self.ids


def stub(alloc_id: str, version: int, status: str = "running") -> dict[str, Any]:
    return {"ID": alloc_id, "JobVersion": version, "ClientStatus": status, "DesiredStatus": "run"}


def rolling(client: Allocations, history: Healthy) -> Surge:
    surge = Surge()
    surge.client = client  # type: ignore[assignment]
    surge.history = history
    surge._apps = {}
    return surge


async def test_runners_of_an_older_job_version_do_not_count() -> None:
    """A healthy runner of a version before the one just registered is not the new one."""
    surge = rolling(Allocations([stub("old", 3)]), Healthy("old"))
    app = _App("o/app", "yurt-o-app", target=1)
    deadline = time.monotonic() + 1.5
    assert not await surge._passing(app, "j", 4, 1, deadline, give_up=True)


async def test_the_second_stage_outlives_a_failed_runner() -> None:
    """In the second stage a failed runner does not end the wait: its replacement passes."""
    client = Allocations([stub("a", 4, "failed")], [stub("a", 4, "failed"), stub("b", 4)])
    surge = rolling(client, Healthy("b"))
    app = _App("o/app", "yurt-o-app", target=1)
    deadline = time.monotonic() + 30
    assert await surge._passing(app, "j", 4, 1, deadline, give_up=False)
    first = Allocations([stub("a", 4, "failed")], [stub("b", 4)])
    assert not await rolling(first, Healthy("b"))._passing(app, "j", 4, 1, deadline, give_up=True)
