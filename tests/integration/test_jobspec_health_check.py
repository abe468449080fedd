"""``yurt jobspec`` prints the app's HealthCheck into the job's Consul check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from doubles import problems
from support import yurt_command

ROOT = Path(__file__).resolve().parents[2]
SHARED_VALIDATOR = ROOT.parent / "shared" / "tools" / "nomad_validate.py"

APP = """
import yurt


class Checked(yurt.App):
    machine_type = "CPU"

    @yurt.endpoint("/", health_check=yurt.HealthCheck(timeout_seconds=7, failure_threshold=4))
    def run(self) -> None:
        return None
"""


def shared_problems(body: dict[str, Any]) -> list[str]:
    """The shared validator's problems with ``body`` (skips the test where it is absent)."""
    if not SHARED_VALIDATOR.exists():
        pytest.skip(f"shared validator not found at {SHARED_VALIDATOR}")
    spec = importlib.util.spec_from_file_location("nomad_validate", SHARED_VALIDATOR)
    assert spec is not None and spec.loader is not None
    validator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validator)
    found: list[str] = validator.problems(body)
    return found


async def test_jobspec_carries_the_apps_health_check(tmp_path: Path) -> None:
    """HealthCheck(timeout_seconds=7, failure_threshold=4) is the check's Timeout and failures."""
    app = tmp_path / "checked.py"
    app.write_text(APP)
    code, out, err = await yurt_command(
        "jobspec", f"{app}::Checked", "--nomad-python", "/usr/bin/python3"
    )
    assert code == 0, err
    body: dict[str, Any] = json.loads(out)
    (group,) = body["Job"]["TaskGroups"]
    (service,) = group["Services"]
    (check,) = service["Checks"]
    assert check["Type"] == "http"
    assert check["Timeout"] == 7_000_000_000  # nanoseconds
    assert check["FailuresBeforeCritical"] == 4
    assert check["CheckRestart"]["Limit"] == 1
    assert group["ShutdownDelay"] == check["Interval"]
    assert problems(body) == []
    assert shared_problems(body) == []
