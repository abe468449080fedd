"""A runner's first step on a cluster node: its app's environment and secrets, then the runner.

``python -m yurt.runner.bootstrap [options] -- <runner arguments>``, run by the Nomad task of an
app with requirements or required secrets (an app with neither starts ``yurt.runner`` at once):

1. every name given with ``--require-secret`` must be in the environment (the Nomad task's
   template put the server's secrets there); a missing one fails the start, naming it;
2. with ``--requirements`` (the app's requirements as JSON), the environment they fix is built
   under ``--envs-dir`` or reused from there (``yurt.envs``: one directory per digest, built
   once under a lock that every runner of the node shares, a failure recorded so that the next
   start fails at once without installing again);
3. the process becomes ``python -m yurt.runner <runner arguments>`` with that environment's
   interpreter (``os.execv``: same process, same pid, signals and logs as before).

Its progress is logged as JSON lines on stderr, the runner's log; a failure's last line starts
with ``FAILURE_MARK`` (as the runner's own do), which the server reads back and tells waiting
callers. Like the runner, it imports no control-plane code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import structlog

from yurt.config import EnvsConfig
from yurt.errors import EnvironmentBuildError
from yurt.logging import configure
from yurt.runner.contract import EXIT_ENVIRONMENT, EXIT_SECRETS, RUNNER_MODULE, failure_line

log = structlog.get_logger("yurt.runner.bootstrap")

# The allocation's own directory when no cache that outlives it is configured.
ALLOC_ENVS = "yurt-envs"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The bootstrap's own options, and the runner's arguments after ``--``."""
    own, sep, runner = _split(argv)
    p = argparse.ArgumentParser(prog="python -m yurt.runner.bootstrap")
    p.add_argument("--requirements", default="", metavar="JSON", help="the app's requirements")
    p.add_argument(
        "--envs-dir", default="", help="where environments are cached; default: the alloc dir"
    )
    p.add_argument("--installer", choices=["pip", "uv"], default="pip")
    p.add_argument("--pip-arg", action="append", default=[], help="an installer argument")
    p.add_argument("--require-secret", action="append", default=[], help="a secret's name")
    p.add_argument("--log-format", choices=["console", "json"], default="json")
    args = p.parse_args(own)
    if not sep:
        p.error("give the runner's arguments after --")
    return args, runner


def _split(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" not in argv:
        return argv, False, []
    at = argv.index("--")
    return argv[:at], True, argv[at + 1 :]


def missing_secrets(required: list[str], environ: dict[str, str]) -> list[str]:
    """The required names the environment lacks. Pure."""
    return [name for name in required if name not in environ]


def envs_root(given: str, environ: dict[str, str]) -> Path:
    """Where environments live: ``--envs-dir``, else the allocation's directory."""
    if given:
        return Path(given)
    alloc = environ.get("NOMAD_ALLOC_DIR")
    return Path(alloc) / ALLOC_ENVS if alloc else Path.cwd() / ALLOC_ENVS


def one_line(message: str) -> str:
    """A multi-line message on one line, as the failure line must be (``parse_failure``)."""
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())


def fail(code: int, kind: str, message: str) -> int:
    """Report a failure on the last stderr line (as the runner does) and return ``code``."""
    sys.stderr.write(failure_line(kind, one_line(message)))
    sys.stderr.flush()
    return code


def interpreter(args: argparse.Namespace, environ: dict[str, str]) -> str:
    """The interpreter to run the runner with: the environment's, built first if need be.

    Raises ``EnvironmentBuildError`` with the installer's last lines.
    """
    from yurt.envs import Environments, install_steps

    steps = install_steps(json.loads(args.requirements)) if args.requirements else []
    if not steps:
        return sys.executable
    config = EnvsConfig(installer=args.installer, pip_args=tuple(args.pip_arg))
    envs = Environments(envs_root(args.envs_dir, environ), config, sys.executable)
    return str(envs.ensure(steps))


def main(argv: list[str] | None = None) -> None:
    """Check secrets, build or reuse the environment, then become the runner."""
    args, runner = parse_args(sys.argv[1:] if argv is None else argv)
    configure("info", args.log_format)
    environ = dict(os.environ)
    missing = missing_secrets(args.require_secret, environ)
    if missing:
        sys.exit(
            fail(
                EXIT_SECRETS,
                "secrets",
                f"the app requires the secrets {missing}, not set on this server; set them "
                "with `yurt secrets set NAME`",
            )
        )
    try:
        python = interpreter(args, environ)
    except EnvironmentBuildError as exc:
        why = f"the app's environment did not build: {exc}"
        sys.exit(fail(EXIT_ENVIRONMENT, "environment", why))
    log.info("runner_exec", python=python, environment=python != sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, "-m", RUNNER_MODULE, *runner])


if __name__ == "__main__":
    main()
