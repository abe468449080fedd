"""doubles.validate.problems agrees with the shared nomad_validate.py and adds Nomad's own rules."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from doubles import problems

SHARED = Path(__file__).resolve().parents[4] / "shared" / "tools" / "nomad_validate.py"
S = 1_000_000_000


def good_job() -> dict[str, Any]:
    return {
        "ID": "web",
        "Name": "web",
        "Type": "service",
        "TaskGroups": [
            {
                "Name": "runner",
                "Count": 1,
                "Scaling": {"Min": 0, "Max": 3, "Enabled": True},
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "Update": {"HealthyDeadline": 60 * S, "ProgressDeadline": 120 * S},
                "Services": [
                    {
                        "Name": "web",
                        "PortLabel": "http",
                        "Meta": {"a": "b"},
                        "Checks": [{"Type": "http", "Path": "/h", "Interval": S, "Timeout": 2 * S}],
                    }
                ],
                "Tasks": [
                    {
                        "Name": "runner",
                        "Driver": "raw_exec",
                        "Config": {"command": "/usr/bin/python3", "args": ["-c", "1"]},
                        "Env": {"A": "1"},
                        "Resources": {
                            "Devices": [
                                {
                                    "Name": "nvidia/gpu",
                                    "Count": 1,
                                    "Constraints": [
                                        {
                                            "LTarget": "${device.model}",
                                            "Operand": "regexp",
                                            "RTarget": "H100",
                                        }
                                    ],
                                }
                            ]
                        },
                    }
                ],
            }
        ],
    }


def mutate(path: str, value: Any) -> dict[str, Any]:
    job = good_job()
    *parents, last = path.split(".")
    node: Any = job
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return job


_DELETE = object()
GROUP = "TaskGroups.0"
CHECK = f"{GROUP}.Services.0.Checks.0"

SHARED_RULES = [
    mutate(f"{GROUP}.Tasks.0.Resources.memory", 100),
    mutate(f"{CHECK}.Interval", "10s"),
    mutate(f"{GROUP}.Tasks.0.Env", {"A": 1}),
    mutate(f"{GROUP}.Tasks.0.Resources.Devices.0.Constraints.0.Operand", _DELETE),
    mutate(f"{GROUP}.Update.HealthyDeadline", 200 * S),
    mutate("ID", _DELETE),
]
OWN_RULES = [
    mutate(f"{CHECK}.Interval", S // 2),
    mutate(f"{CHECK}.Timeout", _DELETE),
    mutate(f"{GROUP}.Scaling.Max", _DELETE),
    mutate(f"{GROUP}.Count", 4),
    mutate(f"{GROUP}.Tasks.0.Config.command", "python3"),
]


def test_a_good_job_has_no_problems() -> None:
    """The reference job is valid bare and wrapped in a register body."""
    assert problems(good_job()) == []
    assert problems({"Job": good_job(), "PreserveCounts": True}) == []


@pytest.mark.parametrize("job", SHARED_RULES + OWN_RULES)
def test_bad_jobs_have_problems(job: dict[str, Any]) -> None:
    """Each broken rule is reported."""
    assert problems(job)
    assert problems({"Job": copy.deepcopy(job)})


@pytest.mark.skipif(not SHARED.exists(), reason="the shared nomad_validate.py is not here")
@pytest.mark.parametrize("job", [good_job(), *SHARED_RULES])
def test_agrees_with_the_shared_validator(job: dict[str, Any]) -> None:
    """On the rules both state, both find problems or neither does."""
    spec = importlib.util.spec_from_file_location("shared_nomad_validate", SHARED)
    assert spec and spec.loader
    shared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shared)
    assert bool(shared.problems(job)) == bool(problems(job))
    assert bool(shared.problems({"Job": job})) == bool(problems({"Job": job}))
