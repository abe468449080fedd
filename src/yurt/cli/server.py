"""``yurt server``: the long-lived control plane (router, queue, admin API, scheduler, backend)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import structlog

from yurt import heap
from yurt.aio import run
from yurt.cli.options import add_serving_options, config_from_args, stop_on_signals
from yurt.config import ServerConfig
from yurt.errors import YurtError
from yurt.logging import configure
from yurt.privatefs import hide_process

log = structlog.get_logger("yurt.cli")


def add_parser(commands: Any) -> None:
    """Register ``server`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "server",
        help="run the control plane: apps are deployed to it with `yurt deploy`",
    )
    add_serving_options(p)
    p.add_argument(
        "--admin-token",
        default=None,
        help="bearer token for the admin API (default: $YURT_ADMIN_TOKEN; required when "
        "listening beyond loopback)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Serve until a signal; returns the exit code."""
    configure(args.log_level, args.log_format)
    hide_process()  # its runners, of the same user, must not read its environment
    try:
        config = config_from_args(args)
        return run(serve(config), config.event_loop)
    except YurtError as exc:
        print(f"yurt server: {exc}", file=sys.stderr)
        return 1


async def serve(config: ServerConfig) -> int:
    """Start the platform in server mode and stop it on SIGINT/SIGTERM."""
    from yurt.platform import Platform

    stop = stop_on_signals()
    platform = Platform(config, server=True)
    await platform.start()
    heap.settle()
    try:
        apps = sorted(platform.router.routes)
        print(
            f"yurt: server at {platform.url} (backend {config.backend}, "
            f"{len(apps)} app(s){': ' + ', '.join(apps) if apps else ''})",
            flush=True,
        )
        print(f"  deploy: yurt deploy FILE::Class --server {platform.public_url}", flush=True)
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await platform.stop()
        log.info("stopped")
    return 0
