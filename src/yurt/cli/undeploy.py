"""``yurt undeploy APP``: take an app off a yurt server, its runners and its queue with it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from yurt.cli.options import add_debug_option, report_error
from yurt.errors import YurtError


def add_parser(commands: Any) -> None:
    """Register ``undeploy`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "undeploy",
        help="stop serving an app: stop its runners, fail what waits for it, forget it",
    )
    p.add_argument("app", metavar="APP", help="owner/name, or name for the server's default owner")
    p.add_argument(
        "--server", default=None, metavar="URL", help="default: $YURT_SERVER or :8080 here"
    )
    p.add_argument("--token", default=None, help="admin token (default: $YURT_ADMIN_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    add_debug_option(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Undeploy; returns the exit code."""
    from yurt.deployment import undeploy

    try:
        done = undeploy(args.app, server=args.server, token=args.token)
    except YurtError as exc:
        report_error("yurt undeploy", exc, debug=args.debug)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(done)))
        return 0
    failed = f"; {done.failed_requests} waiting requests failed" if done.failed_requests else ""
    print(f"yurt: undeployed {done.app_id} (revision {done.revision}){failed}", flush=True)
    return 0
