"""The surge job that carries an app's new revision while it rolls."""

from __future__ import annotations

from typing import Any

from yurt.backends.nomad.surge import surge_id, surge_job


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


def test_surge_job_count_stays_within_scaling_max() -> None:
    """A Count above the new revision's maximum is brought down to it."""
    assert surge_job(job(), 5)["TaskGroups"][0]["Count"] == 2
