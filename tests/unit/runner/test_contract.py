"""The contract between the control plane and a runner: what one side writes, the other reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from yurt.runner.__main__ import parse_args
from yurt.runner.contract import failure_line, parse_failure, runner_argv


def test_a_local_command_line_parses_to_what_was_built() -> None:
    """The local backend's arguments reach the runner's parser as given."""
    machines = {"GPU-H100": {"gpu_memory_mib": 92160}}
    argv = runner_argv(
        payload="/p.yurt",
        host="127.0.0.1",
        port=4242,
        fd=7,
        runner_id="r-1",
        parent_pid=99,
        kill_after=3.5,
        loop="asyncio",
        machines=machines,
    )
    args = parse_args(argv)
    assert (str(args.payload), args.host, args.port, args.fd) == ("/p.yurt", "127.0.0.1", 4242, 7)
    assert (args.runner_id, args.parent_pid, args.kill_after) == ("r-1", 99, 3.5)
    assert args.loop == "asyncio" and json.loads(args.machines) == machines


def test_a_cluster_command_line_names_the_url_and_digest() -> None:
    """A runner on a cluster downloads its payload: URL and digest travel together."""
    argv = runner_argv(
        payload_url="http://127.0.0.1:9/p",
        payload_sha256="ab" * 32,
        host="0.0.0.0",
        port="${NOMAD_PORT_http}",
        runner_id="${NOMAD_ALLOC_ID}",
        log_format="json",
    )
    assert "--fd" not in argv and "--machines" not in argv
    args = parse_args(
        [*argv[: argv.index("--port") + 1], "8080", *argv[argv.index("--port") + 2 :]]
    )
    assert (args.payload_url, args.payload_sha256, args.log_format) == (
        "http://127.0.0.1:9/p",
        "ab" * 32,
        "json",
    )


def test_the_payload_is_named_exactly_once() -> None:
    """Both sources, or neither, or a URL without its digest, is a mistake of the caller."""
    with pytest.raises(ValueError, match="exactly one"):
        runner_argv(payload="/p", payload_url="http://x/p", host="h", port=1, runner_id="r")
    with pytest.raises(ValueError, match="exactly one"):
        runner_argv(host="h", port=1, runner_id="r")
    with pytest.raises(ValueError, match="payload_sha256"):
        runner_argv(payload_url="http://x/p", host="h", port=1, runner_id="r")


def test_the_failure_line_reads_back_and_the_last_one_wins() -> None:
    """``parse_failure`` finds the kind and message the runner wrote last."""
    text = "log\n" + failure_line("gpu", "first") + "more\n" + failure_line("setup", "a: b")
    assert parse_failure(text) == ("setup", "a: b")
    assert parse_failure("Segmentation fault\n") is None


def test_the_contract_loads_nothing_of_the_runner() -> None:
    """Importing the contract runs no runner code: a control-plane import costs nothing."""
    code = (
        "import sys, yurt.runner.contract; "
        "print(sorted(m for m in sys.modules if m.startswith('yurt.runner.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['yurt.runner.contract']"
