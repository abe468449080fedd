"""How the local backend starts a runner: its command line and environment."""

from __future__ import annotations

import json
from pathlib import Path

from yurt.backends.localproc import runner_command, runner_env
from yurt.config import LocalBackendConfig


def test_the_runner_listens_on_the_inherited_socket_and_knows_its_supervisor() -> None:
    config = LocalBackendConfig(python="/py", kill_after=3.0)
    machines = {"GPU-H100": {"gpu_memory_mib": 92160}}
    cmd = runner_command(config, Path("/p.yurt"), "r-1", 4242, 7, machines, parent_pid=99)
    assert cmd[:3] == ["/py", "-m", "yurt.runner"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert flags["--payload"] == "/p.yurt"
    assert (flags["--port"], flags["--fd"]) == ("4242", "7")
    assert (flags["--parent-pid"], flags["--kill-after"]) == ("99", "3.0")
    assert json.loads(flags["--machines"]) == machines
    assert "--machines" not in runner_command(config, Path("/p"), "r", 1, 3, {}, parent_pid=1)


def test_each_runner_sees_only_its_own_gpus() -> None:
    base = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert runner_env(base, ["GPU-a"])["CUDA_VISIBLE_DEVICES"] == "GPU-a"
    cpu = runner_env(base, [])
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["PYTHONUNBUFFERED"] == "1"
    assert cpu["PATH"] == "/bin" and base["CUDA_VISIBLE_DEVICES"] == "0,1"
