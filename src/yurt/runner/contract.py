"""What the control plane and a runner agree on, in one place: both sides import this module.

- the command line the platform starts a runner with (``runner_argv``), which
  ``yurt.runner.__main__.parse_args`` reads;
- the environment variables it hands a runner its secrets in (``RUNNER_TOKEN_ENV``,
  ``PAYLOAD_TOKEN_ENV``);
- how a runner says why it failed: its exit code (``EXIT_*``) and a last stderr line starting
  with ``FAILURE_MARK``, which the backends read back with ``parse_failure``.

Standard library only, and no import of the runner's entry module: a control-plane module that
imports this loads nothing of the runner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# The runner's own token: only the router, which holds it, may call a runner's routes
# (``yurt.runner.token``). The runner takes it out of its environment before user code runs.
RUNNER_TOKEN_ENV = "YURT_RUNNER_TOKEN"
# A runner on a cluster downloads its payload with this bearer token (``yurt.runner.fetch``).
PAYLOAD_TOKEN_ENV = "YURT_PAYLOAD_TOKEN"

# The last stderr line of a runner (or its bootstrap) that failed to start begins with this,
# then ``<kind>: <message>``.
FAILURE_MARK = "yurt-runner-failure:"

# Exit codes. 0: stopped gracefully; 2: bad arguments (argparse's own).
EXIT_PAYLOAD = 3  # the payload could not be loaded
EXIT_SETUP = 4  # setup() raised
EXIT_STARTUP_TIMEOUT = 5  # setup() did not finish within startup_timeout
EXIT_GPU = 6  # the visible GPUs do not match the app
EXIT_ENVIRONMENT = 7  # the bootstrap could not build the app's environment
EXIT_SECRETS = 8  # the bootstrap found a required secret missing

RUNNER_MODULE = "yurt.runner"  # ``python -m`` this to start a runner
BOOTSTRAP_MODULE = "yurt.runner.bootstrap"  # or this, to build its environment first


def failure_line(kind: str, message: str) -> str:
    """The line a failing runner writes last on stderr (``parse_failure`` reads it back)."""
    return f"{FAILURE_MARK} {kind}: {message}\n"


def parse_failure(text: str) -> tuple[str, str] | None:
    """(kind, message) from the last ``FAILURE_MARK`` line of a runner's output, if any."""
    for line in reversed(text.splitlines()):
        if line.startswith(FAILURE_MARK):
            kind, _, message = line[len(FAILURE_MARK) :].strip().partition(": ")
            return kind, message
    return None


def runner_argv(
    *,
    port: int | str,
    host: str,
    runner_id: str,
    payload: str | None = None,
    payload_url: str | None = None,
    payload_sha256: str | None = None,
    fd: int | None = None,
    parent_pid: int | None = None,
    kill_after: float | None = None,
    loop: str | None = None,
    log_format: str | None = None,
    machines: Mapping[str, Mapping[str, Any]] | None = None,
    sort_machines: bool = False,
) -> list[str]:
    """The runner's arguments after ``python -m yurt.runner``. Pure.

    Exactly one of ``payload`` (a file) and ``payload_url`` (with ``payload_sha256``) names the
    payload; an option left None is left out, so the runner's default holds. ``port`` may be a
    string for a scheduler to interpolate (Nomad's ``${NOMAD_PORT_http}``). ``machines``, the
    server's changes to the machine catalog, travels as JSON when not empty.
    """
    if (payload is None) == (payload_url is None):
        raise ValueError("give exactly one of payload and payload_url")
    if payload_url is not None and not payload_sha256:
        raise ValueError("payload_url needs payload_sha256")
    if payload is not None:
        args = ["--payload", payload]
    else:
        args = ["--payload-url", str(payload_url), "--payload-sha256", str(payload_sha256)]
    args += ["--host", host, "--port", str(port)]
    if fd is not None:
        args += ["--fd", str(fd)]
    args += ["--runner-id", runner_id]
    optional = (
        ("--parent-pid", parent_pid),
        ("--kill-after", kill_after),
        ("--loop", loop),
        ("--log-format", log_format),
    )
    args += [item for flag, value in optional if value is not None for item in (flag, str(value))]
    if machines:
        args += ["--machines", json.dumps(machines, sort_keys=sort_machines)]
    return args
