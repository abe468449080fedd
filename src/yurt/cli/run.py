"""``yurt run FILE::Class``: serve an App on local runners until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from yurt import heap
from yurt.aio import run
from yurt.cli.options import (
    add_debug_option,
    add_serving_options,
    config_from_args,
    public_url,
    report_error,
    stop_on_signals,
)
from yurt.config import ServerConfig
from yurt.errors import YurtError
from yurt.logging import configure
from yurt.privatefs import hide_process
from yurt.spec import AppSpec, build_spec

log = structlog.get_logger("yurt.cli")
__all__ = ["add_parser", "config_from_args", "example_body", "examples", "handle", "public_url"]


def add_parser(commands: Any) -> None:
    """Register ``run`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="serve an App until Ctrl-C (router + runners: local ones, or on Nomad with "
        "--backend nomad, removed again on exit)",
    )
    p.add_argument("target", metavar="FILE::Class", help="e.g. examples/echo.py::Echo")
    add_serving_options(p)
    add_debug_option(p)
    p.add_argument(
        "--quiet",
        dest="runner_console",
        action="store_false",
        help="do not show the runners' output here, prefixed with each runner's id "
        "(it is in DATA_DIR/logs/ either way)",
    )
    p.set_defaults(handler=handle, runner_console=True)


def example_body(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A request body from a model's JSON schema: each field's first example or default."""
    body: dict[str, Any] = {}
    for name, prop in ((schema or {}).get("properties") or {}).items():
        if prop.get("examples"):
            body[name] = prop["examples"][0]
        elif "default" in prop:
            body[name] = prop["default"]
    return body


def examples(base: str, app_id: str, spec: AppSpec) -> list[str]:
    """The curl lines ``yurt run`` prints: each endpoint run directly, the first one queued."""
    lines = []
    for n, endpoint in enumerate(e for e in spec.endpoints if not e.is_websocket):
        body = json.dumps(example_body(endpoint.input_schema))
        tail = "" if endpoint.path == "/" else endpoint.path
        data = f"-H 'content-type: application/json' -d '{body}'"
        lines.append(f"  try: curl -s -X POST {base}/{app_id}{tail} {data}")
        if n == 0:
            lines.append(f"  queue: curl -s -X POST {base}/queue/{app_id}{tail} {data}")
    return lines


def handle(args: argparse.Namespace) -> int:
    """Run until a signal; returns the exit code."""
    configure(args.log_level, args.log_format)
    hide_process()  # its runners, of the same user, must not read its environment
    try:
        config = config_from_args(args)
        return run(serve(args.target, config), config.event_loop)
    except YurtError as exc:
        report_error("yurt run", exc, debug=args.debug)
        return 1


async def serve(target: str, config: ServerConfig) -> int:
    """Load the App, serve it, and stop everything on SIGINT/SIGTERM."""
    from yurt.loader import load_app
    from yurt.platform import Platform

    cls = load_app(target)
    stop = stop_on_signals()
    # On Nomad the runner task builds it on its node.
    requirements = build_spec(cls).requirements
    if config.backend == "local" and not await build_environment(requirements, config, stop):
        return 0  # stopped during the build
    # On a cluster, what `yurt run` placed goes when it stops.
    platform = Platform(config, ephemeral=config.backend == "nomad")
    (app_id,) = await platform.start(cls)
    heap.settle()
    try:
        print(f"yurt: serving {cls.__name__} at {platform.url}/{app_id}", flush=True)
        for line in examples(platform.public_url, app_id, build_spec(cls)):
            print(line, flush=True)
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await platform.stop()
        log.info("stopped")
    return 0


async def build_environment(
    requirements: Sequence[str] | Sequence[Sequence[str]], config: ServerConfig, stop: asyncio.Event
) -> bool:
    """Build the app's environment before serving it, its stages in the console (a bar on a
    terminal), so the first request does not wait for an install; False when a signal came
    first. Raises ``EnvironmentBuildError`` with the installer's last lines."""
    from yurt.cli.env_progress import ConsoleProgress
    from yurt.envs import BuildCancelled, Environments, install_steps

    if not install_steps(requirements):
        return True  # no environment: the fast path
    console = ConsoleProgress(sys.stdout, sys.stdout.isatty())
    root = config.data_dir / "envs"
    envs = Environments(root, config.envs, config.local.python, progress=console)
    build = asyncio.ensure_future(envs.interpreter(requirements))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({build, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not build.done():
            envs.close()  # the installer is killed; its environment removed, nothing recorded
            with contextlib.suppress(BuildCancelled):
                await build
        console.close()
    if build.cancelled() or isinstance(build.exception(), BuildCancelled):
        return False
    build.result()
    return True
