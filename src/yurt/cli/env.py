"""``yurt env list`` and ``yurt env rebuild``: the environments built from apps' requirements."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yurt.cli.options import add_debug_option


def add_parser(commands: Any) -> None:
    """Register ``env`` and its subcommands on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "env", help="list the environments built from apps' requirements, or rebuild one"
    )
    sub = p.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="every built or failed environment, by digest")
    rebuild = sub.add_parser(
        "rebuild",
        help="forget environments (a failed build too) so the next runner builds them anew",
    )
    rebuild.add_argument("digests", nargs="*", metavar="DIGEST", help="as `yurt env list` shows")
    rebuild.add_argument("--failed", action="store_true", help="every failed environment")
    for q in (ls, rebuild):
        q.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="default: $YURT_DATA_DIR or ~/.local/share/yurt",
        )
        add_debug_option(q)
        q.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """List or forget environments; returns the exit code."""
    from yurt.config import EnvsConfig, default_data_dir
    from yurt.envs import Environments

    envs = Environments((args.data_dir or default_data_dir()) / "envs", EnvsConfig())
    if args.env_command == "list":
        for info in envs.on_disk():
            steps = " | ".join(" ".join(step) for step in info.steps)
            print(f"{info.digest}  {info.state:6}  {steps}")
            if info.detail:
                print("    " + info.detail.replace("\n", "\n    "))
        return 0
    digests = list(args.digests)
    if args.failed:
        digests += [i.digest for i in envs.on_disk() if i.state == "failed"]
    if not digests:
        print("yurt env rebuild: name a DIGEST (yurt env list shows them) or --failed")
        return 2
    missing = [d for d in digests if not envs.forget(d)]
    for d in digests:
        if d not in missing:
            print(f"yurt: forgot environment {d}; the next runner that needs it builds it")
    for d in missing:
        print(f"yurt env rebuild: no environment {d}")
    return 1 if missing else 0
