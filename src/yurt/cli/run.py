"""``yurt run FILE::Class``: serve an App on local runners until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from yurt.aio import LOOP_NAMES, run
from yurt.config import LocalBackendConfig, RouterConfig, ServerConfig, default_data_dir
from yurt.errors import YurtError
from yurt.logging import configure

log = structlog.get_logger("yurt.cli")


def add_parser(commands: Any) -> None:
    """Register ``run`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "run", help="serve an App on this machine (router + local runners) until Ctrl-C"
    )
    p.add_argument("target", metavar="FILE::Class", help="e.g. examples/echo.py::Echo")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free)")
    p.add_argument("--data-dir", type=Path, default=None, help="payloads and runner logs")
    p.add_argument("--owner", default="default", help="owner segment of the app's URL")
    p.add_argument(
        "--loop",
        choices=LOOP_NAMES,
        default="auto",
        help="event loop for the router and runners (auto: uvloop when installed)",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=["console", "json"], default="console")
    p.set_defaults(handler=handle)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server configuration the arguments describe (pure)."""
    return ServerConfig(
        data_dir=args.data_dir or default_data_dir(),
        event_loop=args.loop,
        router=RouterConfig(host=args.host, port=args.port, owner=args.owner),
        local=LocalBackendConfig(runner_loop=args.loop),
    )


def example_body(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A request body from a model's JSON schema: each field's first example or default."""
    body: dict[str, Any] = {}
    for name, prop in ((schema or {}).get("properties") or {}).items():
        if prop.get("examples"):
            body[name] = prop["examples"][0]
        elif "default" in prop:
            body[name] = prop["default"]
    return body


def handle(args: argparse.Namespace) -> int:
    """Run until a signal; returns the exit code."""
    configure(args.log_level, args.log_format)
    try:
        config = config_from_args(args)
        return run(serve(args.target, config), config.event_loop)
    except YurtError as exc:
        print(f"yurt run: {exc}", file=sys.stderr)
        return 1


async def serve(target: str, config: ServerConfig) -> int:
    """Load the App, serve it, and stop everything on SIGINT/SIGTERM."""
    from yurt.loader import load_app
    from yurt.platform import Platform
    from yurt.spec import build_spec

    cls = load_app(target)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed by hand: a shell starts background jobs with SIGINT ignored, so Python's own
    # KeyboardInterrupt would never come.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    platform = Platform(config)
    await platform.start()
    try:
        app_id = await platform.add_app(cls)
        url = f"{platform.url}/{app_id}"
        print(f"yurt: serving {cls.__name__} at {url}", flush=True)
        for endpoint in build_spec(cls).endpoints:
            body = json.dumps(example_body(endpoint.input_schema))
            target = url if endpoint.path == "/" else url + endpoint.path
            print(
                f"  try: curl -s -X POST {target} -H 'content-type: application/json' -d '{body}'",
                flush=True,
            )
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await platform.stop()
        log.info("stopped")
    return 0
