"""``yurt run FILE::Class``: serve an App on local runners until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from yurt.aio import LOOP_NAMES, run
from yurt.config import LocalBackendConfig, RouterConfig, ServerConfig, default_data_dir
from yurt.errors import ConfigError, YurtError
from yurt.logging import configure
from yurt.spec import AppSpec, build_spec

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
        "--tls-cert",
        type=Path,
        default=None,
        metavar="PEM",
        help="serve https with this certificate chain (needs --tls-key)",
    )
    p.add_argument(
        "--tls-key", type=Path, default=None, metavar="PEM", help="private key of --tls-cert"
    )
    p.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="base of the URLs the queue hands out, e.g. https://yurt.example.com "
        "(default: the scheme and Host each request came with)",
    )
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
    """The server configuration the arguments describe (pure: files are read when serving)."""
    if (args.tls_cert is None) != (args.tls_key is None):
        missing = "--tls-key" if args.tls_key is None else "--tls-cert"
        raise ConfigError(f"{missing} is missing: --tls-cert and --tls-key go together")
    return ServerConfig(
        data_dir=args.data_dir or default_data_dir(),
        event_loop=args.loop,
        router=RouterConfig(
            host=args.host,
            port=args.port,
            owner=args.owner,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            public_url=public_url(args.public_url),
        ),
        local=LocalBackendConfig(runner_loop=args.loop),
    )


def public_url(value: str | None) -> str | None:
    """``--public-url`` checked: an http(s) URL with a host, without a trailing slash."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"--public-url {value!r} is not a base URL; give scheme and host, "
            "e.g. https://yurt.example.com or https://example.com/yurt"
        )
    return value.rstrip("/")


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
    for n, endpoint in enumerate(spec.endpoints):
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

    cls = load_app(target)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed by hand: a shell starts background jobs with SIGINT ignored, so Python's own
    # KeyboardInterrupt would never come.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    platform = Platform(config)
    (app_id,) = await platform.start(cls)
    try:
        print(f"yurt: serving {cls.__name__} at {platform.url}/{app_id}", flush=True)
        for line in examples(config.router.public_url or platform.url, app_id, build_spec(cls)):
            print(line, flush=True)
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await platform.stop()
        log.info("stopped")
    return 0
