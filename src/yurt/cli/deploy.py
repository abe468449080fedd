"""``yurt deploy FILE::Class``: upload an App to a yurt server and print where to call it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from yurt.cli.options import add_debug_option, report_error
from yurt.cli.run import examples
from yurt.errors import EnvironmentBuildError, YurtError
from yurt.spec import build_spec


def add_parser(commands: Any) -> None:
    """Register ``deploy`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "deploy", help="deploy an App to a yurt server (a new revision if it changed)"
    )
    p.add_argument("target", metavar="FILE::Class", help="e.g. examples/echo.py::Echo")
    p.add_argument(
        "--server", default=None, metavar="URL", help="default: $YURT_SERVER or :8080 here"
    )
    p.add_argument("--token", default=None, help="admin token (default: $YURT_ADMIN_TOKEN)")
    p.add_argument("--owner", default=None, help="owner segment of the app's URL")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="do not follow the build of the app's environment (the server builds it either way)",
    )
    add_debug_option(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Deploy; returns the exit code."""
    from yurt.deployment import deploy
    from yurt.loader import load_app

    def say(line: str) -> None:
        if not args.json:
            print(f"yurt: {line}", flush=True)

    try:
        cls = load_app(args.target)
        done = deploy(cls, server=args.server, token=args.token, owner=args.owner, progress=say)
        if args.wait and build_spec(cls).requirements:
            follow(args, done.app_id, say)
    except YurtError as exc:
        report_error("yurt deploy", exc, debug=args.debug)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(done)))
        return 0
    say(f"{done.outcome} {done.app_id}: revision {done.revision}")
    base = done.url[: -len(done.app_id) - 1]
    for line in examples(base, done.app_id, build_spec(cls)):
        print(line, flush=True)
    return 0


def follow(args: argparse.Namespace, app_id: str, say: Any) -> None:
    """Show the server's build of the app's environment until it ends (a bar on a terminal).

    Raises ``EnvironmentBuildError`` when it failed, with the installer's last lines."""
    from yurt.cli.env_progress import ConsoleProgress
    from yurt.deployment import follow_environment
    from yurt.envs_progress import BuildEvent

    console = ConsoleProgress(sys.stdout, sys.stdout.isatty())
    failed: list[str] = []

    def shown(data: dict[str, Any]) -> None:
        event = BuildEvent.from_dict(data)
        if event.stage == "failed":
            failed.append(event.detail)
        if not args.json:
            console(event)

    try:
        state = follow_environment(app_id, server=args.server, token=args.token, progress=shown)
    finally:
        console.close()
    if state == "failed":
        detail = failed[-1] if failed else "see `yurt env list` on the server"
        raise EnvironmentBuildError(
            f"{app_id} is deployed, but its environment did not build: {detail}"
        )
    if state == "on_nodes":
        say("the environment is built on each node where a runner starts")
    elif state == "building":
        say("the environment is still building on the server; its runners wait for it")
