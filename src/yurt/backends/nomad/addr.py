"""Agent addresses (``http[s]://host[:port]``) for the Nomad and Consul adapters. Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

from yurt.errors import ConfigError

NOMAD_PORT = 4646
CONSUL_PORT = 8500


def parse_addr(addr: str, *, service: str, default_port: int) -> tuple[str, int, str]:
    """``http[s]://host[:port]`` -> (host, port, scheme); ``default_port`` when absent.

    A bare ``host:port`` means http. Anything else is a ``ConfigError`` naming ``service``.
    """
    parts = urlsplit(addr if "://" in addr else f"http://{addr}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{service} addr {addr!r} is not an http(s) URL; use e.g. "
            f"http://127.0.0.1:{default_port}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{service} addr {addr!r} has an invalid port: {exc}") from exc
    return parts.hostname, port or default_port, parts.scheme
