"""``yurt deploy FILE::Class``: upload an App to a yurt server and print where to call it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from yurt.cli.options import add_debug_option, report_error
from yurt.cli.run import examples
from yurt.errors import YurtError
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
