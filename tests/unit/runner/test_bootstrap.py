"""The runner's bootstrap on a cluster node: secrets checked, the environment built or its
failure reported on one line, then the runner itself (``yurt.runner.bootstrap``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yurt.runner.contract import parse_failure

BOOT = [sys.executable, "-m", "yurt.runner.bootstrap"]
# What the runner must not load (as test_exports checks for ``import yurt``).
FORBIDDEN_PREFIXES = ("yurt.router", "yurt.admin", "yurt.backends", "yurt.scheduler", "yurt.cli")


@pytest.fixture
def clean_env() -> dict[str, str]:
    """This process's environment without the secret the tests require."""
    return {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BOOT, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_a_missing_secret_fails_naming_it(clean_env: dict[str, str]) -> None:
    """A required secret the template did not bring: exit 8, the failure line names it."""
    done = run(["--require-secret", "HF_TOKEN", "--", "--port", "1"], clean_env)
    assert done.returncode == 8
    kind, message = parse_failure(done.stderr) or ("", "")
    assert kind == "secrets" and "['HF_TOKEN']" in message


def test_with_its_secrets_and_no_requirements_it_becomes_the_runner(
    clean_env: dict[str, str],
) -> None:
    """Nothing to build: the same process runs ``yurt.runner`` with the arguments after --."""
    env = {**clean_env, "HF_TOKEN": "x"}
    done = run(["--require-secret", "HF_TOKEN", "--", "--help"], env)
    assert done.returncode == 0, done.stderr
    assert "python -m yurt.runner" in done.stdout  # the runner's own usage line


def test_a_build_that_fails_is_one_failure_line_quoting_the_installer(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """The installer's last lines on the failure line, nothing half-built, the failure kept."""
    empty = tmp_path / "wheels"
    empty.mkdir()
    args = ["--requirements", json.dumps(["yurt_test_pkg==9.0"]), "--envs-dir", str(tmp_path / "e")]
    args += ["--pip-arg=--no-index", f"--pip-arg=--find-links={empty}", "--", "--port", "1"]
    done = run(args, clean_env)
    assert done.returncode == 7, done.stderr
    last = done.stderr.rstrip("\n").splitlines()[-1]
    kind, message = parse_failure(last) or ("", "")
    assert kind == "environment"
    assert "yurt_test_pkg==9.0" in message and " | " in message
    # The lock and the build's progress record stay; of the environment, only the record of
    # its failure.
    kept = {p.suffix for p in (tmp_path / "e").iterdir()} - {".lock", ".progress"}
    assert kept == {".failed"}


def test_the_bootstrap_loads_no_control_plane_code() -> None:
    """Like the runner, the bootstrap (and the environments it builds) import no router,
    backend, scheduler or admin code."""
    code = (
        "import json, sys, yurt.runner.bootstrap, yurt.envs; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if m.startswith(FORBIDDEN_PREFIXES)] == []
