"""``yurt secrets set|list|unset``: the server's secrets, given to runners as environment
variables. A value is read from stdin when it is ``-`` or left out, so that it stays out of the
shell's history and the process list."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import json
import sys
from typing import Any, TextIO

from yurt.cli.options import add_debug_option, report_error
from yurt.errors import DeployError, YurtError


def add_parser(commands: Any) -> None:
    """Register ``secrets`` and its three subcommands on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "secrets", help="set, list or unset the server's secrets (environment variables of apps)"
    )
    sub = p.add_subparsers(dest="secrets_command", required=True, metavar="SUBCOMMAND")
    set_p = sub.add_parser("set", help="set a secret; every runner started after gets it")
    set_p.add_argument(
        "name",
        metavar="NAME",
        help="an environment variable name, e.g. HF_TOKEN (fal's NAME=VALUE works too)",
    )
    set_p.add_argument(
        "value",
        metavar="VALUE",
        nargs="?",
        default="-",
        help="the value; '-' or none reads it from stdin (kept out of the shell's history)",
    )
    list_p = sub.add_parser("list", help="the secrets' names and when each was set (no values)")
    unset_p = sub.add_parser("unset", help="remove a secret; runners started after lose it")
    unset_p.add_argument("name", metavar="NAME")
    for q in (set_p, list_p, unset_p):
        q.add_argument(
            "--server", default=None, metavar="URL", help="default: $YURT_SERVER or :8080 here"
        )
        q.add_argument("--token", default=None, help="admin token (default: $YURT_ADMIN_TOKEN)")
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        add_debug_option(q)
    p.set_defaults(handler=handle)


def read_value(given: str, name: str, stdin: TextIO) -> str:
    """The value to set: ``given``, or stdin's when it is ``-`` (a prompt without echo on a
    terminal; the one line ending a piped value is dropped, as ``echo`` adds it)."""
    if given != "-":
        return given
    if stdin.isatty():
        return getpass.getpass(f"value of {name}: ")
    value = stdin.read()
    if value.endswith("\r\n"):
        return value[:-2]
    return value.removesuffix("\n")


def split_name(name: str, given: str, stdin: TextIO) -> tuple[str, str]:
    """The name and value to set: fal's ``NAME=VALUE`` (with no VALUE after it), else ``name``
    and ``read_value``'s value."""
    if "=" in name and given == "-":
        name, _, value = name.partition("=")
        return name, value
    return name, read_value(given, name, stdin)


def handle(args: argparse.Namespace) -> int:
    """Carry out one subcommand; returns the exit code."""
    from yurt.deployment import list_secrets, set_secret, unset_secret

    where = {"server": args.server, "token": args.token}
    try:
        if args.secrets_command == "set":
            name, value = split_name(args.name, args.value, sys.stdin)
            if not value:
                raise DeployError(f"no value given for {name}; pass it on stdin or after it")
            outcome = set_secret(name, value, **where)
            _say(args, {"name": name, "outcome": outcome}, f"{outcome} {name}")
        elif args.secrets_command == "unset":
            unset_secret(args.name, **where)
            _say(args, {"name": args.name, "outcome": "unset"}, f"unset {args.name}")
        else:
            found = list_secrets(**where)
            if args.json:
                print(json.dumps([dataclasses.asdict(s) for s in found]))
            for s in [] if args.json else found:
                when = datetime.datetime.fromtimestamp(s.set_at, datetime.UTC)
                print(f"{s.name}\t{when.isoformat(timespec='seconds')}", flush=True)
    except YurtError as exc:
        report_error(f"yurt secrets {args.secrets_command}", exc, debug=args.debug)
        return 1
    return 0


def _say(args: argparse.Namespace, reply: dict[str, str], line: str) -> None:
    print(json.dumps(reply) if args.json else f"yurt: {line}", flush=True)
