"""Parsing ``yurt`` command lines, apart from any side effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from yurt.cli.main import build_parser
from yurt.cli.run import config_from_args


def test_run_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``yurt run FILE::Class`` listens on 127.0.0.1:8080, owner default, default data dir."""
    monkeypatch.setenv("YURT_DATA_DIR", str(tmp_path))
    args = build_parser().parse_args(["run", "examples/echo.py::Echo"])
    config = config_from_args(args)
    assert args.target == "examples/echo.py::Echo"
    assert (config.router.host, config.router.port, config.router.owner) == (
        "127.0.0.1",
        8080,
        "default",
    )
    assert config.data_dir == tmp_path


def test_run_options() -> None:
    """--host, --port, --data-dir and --owner land in the server configuration."""
    args = build_parser().parse_args(
        ["run", "a.py::A", "--host", "0.0.0.0", "--port", "0", "--data-dir", "/d", "--owner", "me"]
    )
    config = config_from_args(args)
    assert (config.router.host, config.router.port, config.router.owner) == ("0.0.0.0", 0, "me")
    assert config.data_dir == Path("/d")


def test_run_requires_target(capsys: pytest.CaptureFixture[str]) -> None:
    """``yurt run`` without a target is a usage error naming the missing argument."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["run"])
    assert info.value.code == 2
    assert "FILE::Class" in capsys.readouterr().err


def test_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-numeric port is rejected by the parser."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "a.py::A", "--port", "http"])
    assert "--port" in capsys.readouterr().err


def test_example_body_from_schema() -> None:
    """The printed curl example takes each field's first example, else its default."""
    from pydantic import BaseModel, Field

    from yurt.cli.run import example_body

    class Body(BaseModel):
        prompt: str = Field(examples=["a yurt", "two yurts"])
        steps: int = 4
        seed: int

    assert example_body(Body.model_json_schema()) == {"prompt": "a yurt", "steps": 4}
    assert example_body(None) == {}


@pytest.mark.parametrize("command", ["run", "server"])
def test_log_level_has_choices(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--log-level takes only a logging level, and says which ones when given another."""
    target = ["a.py::A"] if command == "run" else []
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *target, "--log-level", "verbose"])
    err = capsys.readouterr().err
    assert "invalid choice: 'verbose'" in err and "'debug', 'info', 'warning'" in err


def test_log_level_is_case_insensitive() -> None:
    """--log-level WARNING is read as warning."""
    args = build_parser().parse_args(["run", "a.py::A", "--log-level", "WARNING"])
    assert args.log_level == "warning"


@pytest.mark.parametrize("command", ["run", "deploy"])
def test_debug_flag(command: str) -> None:
    """--debug is off unless given (``yurt run`` and ``yurt deploy``)."""
    assert build_parser().parse_args([command, "a.py::A"]).debug is False
    assert build_parser().parse_args([command, "a.py::A", "--debug"]).debug is True
