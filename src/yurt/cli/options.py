"""Options shared by the commands that serve (``run``, ``server``) and by ``jobspec``.

Each flag defaults to None, so that only the flags given override the config file, which
overrides Nomad's and Consul's own variables, which override the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from yurt.aio import LOOP_NAMES
from yurt.config import ServerConfig, base_url, build_server_config, read_config_file
from yurt.errors import ConfigError

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


def add_config_option(p: argparse.ArgumentParser) -> None:
    """``--config FILE``."""
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="TOML",
        help="server configuration file ([router], [queue], [nomad], [consul], ... sections)",
    )


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """Where Nomad and Consul are, and how runners are placed."""
    g = p.add_argument_group("cluster (with --backend nomad)")
    g.add_argument("--nomad-addr", default=None, metavar="URL", help="default: $NOMAD_ADDR")
    g.add_argument("--nomad-token", default=None, help="default: $NOMAD_TOKEN")
    g.add_argument("--consul-addr", default=None, metavar="URL", help="default: $CONSUL_HTTP_ADDR")
    g.add_argument("--consul-token", default=None, help="default: $CONSUL_HTTP_TOKEN")
    g.add_argument("--nomad-driver", choices=["raw_exec", "docker"], default=None)
    g.add_argument(
        "--nomad-python",
        default=None,
        metavar="PATH",
        help="Python with yurt installed on the nodes (raw_exec; default: this one)",
    )
    g.add_argument("--nomad-image", default=None, help="runner image (docker)")
    g.add_argument(
        "--datacenter",
        action="append",
        default=None,
        dest="datacenters",
        help="the datacenter runners are placed in and found in (default: the Consul agent's)",
    )


def add_serving_options(p: argparse.ArgumentParser) -> None:
    """Everything about where and how the router serves."""
    add_config_option(p)
    p.add_argument(
        "--backend",
        choices=["local", "nomad"],
        default=None,
        help="where runners run: local subprocesses, or Nomad allocations found through Consul",
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (0: any free)")
    p.add_argument(
        "--public",
        action="store_true",
        default=None,
        help="beyond loopback with no API keys, serve every app to anyone (without it, apps "
        "that are not public want a key there: `yurt keys create`)",
    )
    p.add_argument("--data-dir", type=Path, default=None, help="payloads, queue, runner logs")
    p.add_argument("--owner", default=None, help="owner segment of app URLs (default: default)")
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
        help="base URL clients and runners reach this router at, e.g. https://yurt.example.com "
        "(default: the scheme and Host each request came with)",
    )
    p.add_argument(
        "--loop",
        choices=LOOP_NAMES,
        default=None,
        help="event loop for the router and runners (auto: uvloop when installed)",
    )
    add_cluster_options(p)
    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="info")
    p.add_argument("--log-format", choices=["console", "json"], default="console")


def add_debug_option(p: argparse.ArgumentParser) -> None:
    """``--debug``: show the traceback behind an error, not only its one line."""
    p.add_argument("--debug", action="store_true", help="on an error, print its traceback too")


def report_error(command: str, exc: BaseException, *, debug: bool) -> None:
    """Print ``command: message`` on stderr; with ``debug``, the traceback before it."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{command}: {exc}", file=sys.stderr)


def public_url(value: str | None) -> str | None:
    """``--public-url`` checked: an http(s) URL with a host, without a trailing slash."""
    if value is None:
        return None
    try:
        return base_url(value)
    except ValueError:
        shown = repr(value) if "@" not in value else "(not shown: it may hold credentials)"
        raise ConfigError(
            f"--public-url {shown} is not a base URL; give scheme and host, "
            "e.g. https://yurt.example.com or https://example.com/yurt"
        ) from None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration the flags given set, as nested ``ServerConfig`` fields. Pure."""

    def get(name: str) -> Any:
        return getattr(args, name, None)

    if (get("tls_cert") is None) != (get("tls_key") is None):
        missing = "--tls-key" if get("tls_key") is None else "--tls-cert"
        raise ConfigError(f"{missing} is missing: --tls-cert and --tls-key go together")
    loop = get("loop")
    return _drop_none(
        {
            "data_dir": get("data_dir"),
            "backend": get("backend"),
            "admin_token": get("admin_token"),
            "event_loop": loop,
            "router": {
                "host": get("host"),
                "port": get("port"),
                "public": get("public"),
                "owner": get("owner"),
                "tls_cert": get("tls_cert"),
                "tls_key": get("tls_key"),
                "public_url": public_url(get("public_url")),
            },
            "local": {"runner_loop": loop, "console": get("runner_console")},
            "nomad": {
                "addr": get("nomad_addr"),
                "token": get("nomad_token"),
                "driver": get("nomad_driver"),
                "python": get("nomad_python"),
                "image": get("nomad_image"),
                "datacenters": get("datacenters"),
            },
            "consul": {"addr": get("consul_addr"), "token": get("consul_token")},
        }
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server configuration the file, the environment and the flags describe."""
    file = read_config_file(args.config) if getattr(args, "config", None) else {}
    return build_server_config(file, flags_from_args(args))


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (``yurt run`` and ``yurt server`` wait on it).

    Installed by hand: a shell starts background jobs with SIGINT ignored, so Python's own
    KeyboardInterrupt would never come.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
