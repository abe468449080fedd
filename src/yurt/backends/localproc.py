"""How the local backend starts a runner process: its socket, command line and environment,
and how it reads why one failed. No state: ``LocalBackend`` holds the runners."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yurt.config import LocalBackendConfig
from yurt.runner.__main__ import FAILURE_MARK  # the runner's last stderr line on failure


def bound_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of ``host``, for a runner to listen on.

    Bound here and inherited by the runner, so that nothing can take the port between the
    choice and the runner's listen.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    return sock


def free_port(host: str) -> int:
    """A port the OS reports free now (whoever binds it next may lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def read_failure(log_path: Path, returncode: int | None) -> tuple[str, str]:
    """(error kind, message) from the runner's last failure line, else a generic one."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(0, log_path.stat().st_size - 16384))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        tail = []
    for line in reversed(tail):
        if line.startswith(FAILURE_MARK):
            kind, _, message = line[len(FAILURE_MARK) :].strip().partition(": ")
            return kind, message
    return "exited", f"runner exited with code {returncode} before it became ready"


def runner_command(
    config: LocalBackendConfig,
    payload: Path,
    runner_id: str,
    port: int,
    fd: int,
    machines: Mapping[str, Mapping[str, Any]],
    *,
    parent_pid: int | None = None,
) -> list[str]:
    """The runner's command line: ``python -m yurt.runner`` listening on the inherited ``fd``
    (bound to ``port``), draining when this process (``parent_pid``) is gone."""
    cmd = [
        config.python,
        "-m",
        "yurt.runner",
        "--payload",
        str(payload),
        "--host",
        config.host,
        "--port",
        str(port),
        "--fd",
        str(fd),
        "--runner-id",
        runner_id,
        "--parent-pid",
        str(os.getpid() if parent_pid is None else parent_pid),
        "--kill-after",
        str(config.kill_after),
        "--loop",
        config.runner_loop,
    ]
    if machines:
        cmd += ["--machines", json.dumps(machines)]
    return cmd


def runner_env(environ: Mapping[str, str], gpu_uuids: Sequence[str]) -> dict[str, str]:
    """The runner's environment: this one, unbuffered, seeing only its own GPUs.

    UUIDs, not indexes: CUDA numbers GPUs fastest first unless told otherwise, NVML by PCI bus.
    An empty value hides every GPU from a CPU runner, so none uses another's GPU.
    """
    return {**environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ",".join(gpu_uuids)}
