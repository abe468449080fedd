"""Reading why a local runner failed from the end of its output."""

from __future__ import annotations

from yurt.backends.runnerlog import failure_from_tail


def test_failure_line_is_found() -> None:
    """The last failure line wins over earlier output."""
    tail = (
        b"Traceback...\nyurt-runner-failure: setup: old\nmore\n"
        b"yurt-runner-failure: setup: setup() raised RuntimeError: no weights\n"
    )
    assert failure_from_tail(tail, 4) == ("setup", "setup() raised RuntimeError: no weights")


def test_no_failure_line_names_exit_code() -> None:
    """Without a failure line, the exit code is reported."""
    assert failure_from_tail(b"Segmentation fault\n", -11) == (
        "exited",
        "runner exited with code -11 before it became ready",
    )


def test_no_output() -> None:
    """A runner that printed nothing is not an error of its own."""
    assert failure_from_tail(b"", 1)[0] == "exited"
