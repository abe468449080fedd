"""``yurt``: parse the command line and hand over to one subcommand."""

from __future__ import annotations

import argparse
import sys

from yurt import __version__
from yurt.cli import deploy, doctor, env, jobspec, keys, run, secrets, server, undeploy


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="yurt", description="Serverless inference on your own machines."
    )
    parser.add_argument("--version", action="version", version=f"yurt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, server, deploy, undeploy, jobspec, doctor, secrets, keys, env):
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``yurt`` console script."""
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args))
