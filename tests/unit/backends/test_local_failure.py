"""Reading why a runner failed from the end of its log."""

from __future__ import annotations

from pathlib import Path

from yurt.backends.localproc import read_failure


def test_failure_line_is_found(tmp_path: Path) -> None:
    """The last failure line wins over earlier output."""
    log = tmp_path / "r.log"
    log.write_text(
        "Traceback...\nyurt-runner-failure: setup: old\nmore\n"
        "yurt-runner-failure: setup: setup() raised RuntimeError: no weights\n"
    )
    assert read_failure(log, 4) == ("setup", "setup() raised RuntimeError: no weights")


def test_no_failure_line_names_exit_code(tmp_path: Path) -> None:
    """Without a failure line, the exit code is reported."""
    log = tmp_path / "r.log"
    log.write_text("Segmentation fault\n")
    assert read_failure(log, -11) == (
        "exited",
        "runner exited with code -11 before it became ready",
    )


def test_missing_log(tmp_path: Path) -> None:
    """A missing log file is not an error of its own."""
    assert read_failure(tmp_path / "absent.log", 1)[0] == "exited"
