"""The pure parts of environments: install steps, digests, spec spellings, the CLI's arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

import yurt
from yurt.backends.localproc import runner_command
from yurt.cli.main import build_parser
from yurt.config import LocalBackendConfig
from yurt.envs import env_digest, install_steps
from yurt.errors import AppDefinitionError
from yurt.spec import build_spec


class Body(BaseModel):
    text: str


@pytest.mark.parametrize(
    ("requirements", "steps"),
    [
        ([], []),
        (["a==1", "b"], [["a==1", "b"]]),
        ([["torch"], ["flash-attn", "-U"]], [["torch"], ["flash-attn", "-U"]]),
        ([["a"], []], [["a"]]),
    ],
)  # fmt: skip
def test_install_steps_follow_fals_two_spellings(
    requirements: list[str] | list[list[str]], steps: list[list[str]]
) -> None:
    """A list of strings is one install step; a list of lists is one step per list, in order."""
    assert install_steps(requirements) == steps


def test_the_digest_names_requirements_python_and_yurt() -> None:
    """Same inputs, same digest; any of requirements, their order, Python minor or yurt differs."""
    base = env_digest([["a==1", "b"]], "3.11", "0.1.0")
    assert base == env_digest([["a==1", "b"]], "3.11", "0.1.0")
    others = {
        env_digest([["a==2", "b"]], "3.11", "0.1.0"),
        env_digest([["b", "a==1"]], "3.11", "0.1.0"),
        env_digest([["a==1"], ["b"]], "3.11", "0.1.0"),
        env_digest([["a==1", "b"]], "3.12", "0.1.0"),
        env_digest([["a==1", "b"]], "3.11", "0.2.0"),
    }
    assert base not in others and len(others) == 5


def test_requirements_as_lists_of_lists_are_kept_in_order() -> None:
    """fal's list of lists passes the App checks as it is; a mix of both spellings does not."""

    class Steps(yurt.App):
        requirements = [["torch"], ["flash-attn"]]  # type: ignore[list-item]

        @yurt.endpoint("/")
        def run(self, body: Body) -> Body:
            return body

    assert build_spec(Steps).requirements == [["torch"], ["flash-attn"]]

    with pytest.raises(AppDefinitionError, match="list of such lists"):

        class Mixed(Steps):
            requirements = ["torch", ["flash-attn"]]  # type: ignore[list-item]

        build_spec(Mixed)


def test_the_runner_starts_with_the_environments_interpreter(tmp_path: Path) -> None:
    """``runner_command`` runs the environment's python when given one, yurt's otherwise."""
    config = LocalBackendConfig(python="/usr/bin/python3")
    args = (config, tmp_path / "p", "r-1", 1, 3, {})
    assert runner_command(*args, python="/envs/d/bin/python")[0] == "/envs/d/bin/python"
    assert runner_command(*args)[0] == "/usr/bin/python3"


def test_env_command_lines() -> None:
    """`yurt env list` and `yurt env rebuild DIGEST... | --failed` with an optional data dir."""
    ls = build_parser().parse_args(["env", "list", "--data-dir", "/d"])
    assert (ls.env_command, ls.data_dir) == ("list", Path("/d"))
    rebuild = build_parser().parse_args(["env", "rebuild", "ab", "cd"])
    assert (rebuild.env_command, rebuild.digests, rebuild.failed) == (
        "rebuild",
        ["ab", "cd"],
        False,
    )
    assert build_parser().parse_args(["env", "rebuild", "--failed"]).failed is True
