"""What every part of the configuration shares: the frozen model base and the variables read."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from yurt.errors import ConfigError

MIB = 1024 * 1024

# Every environment variable yurt.config reads: yurt's own configuration, credentials among it.
# A runner never gets one (``yurt.backends.localproc.runner_env``).
CONFIG_ENV = frozenset(
    (
        "YURT_ADMIN_TOKEN",
        "YURT_DATA_DIR",
        "YURT_SERVER",
        "XDG_DATA_HOME",
        "CUDA_VISIBLE_DEVICES",
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
        "NOMAD_NAMESPACE",
        "NOMAD_REGION",
        "NOMAD_CACERT",
        "NOMAD_CAPATH",
        "NOMAD_CLIENT_CERT",
        "NOMAD_CLIENT_KEY",
        "NOMAD_TLS_SERVER_NAME",
        "NOMAD_SKIP_VERIFY",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    )
)


class Frozen(BaseModel):
    """A part of the configuration: immutable, every key known, every number finite.

    TOML has ``inf`` and ``nan``: a timeout or an interval of either would wait for ever or
    compare false, so no float field takes them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


NOMAD_PORT = 4646
CONSUL_PORT = 8500


def parse_addr(addr: str, *, service: str, default_port: int) -> tuple[str, int, str]:
    """``http[s]://host[:port]`` -> (host, port, scheme); ``default_port`` when absent. Pure.

    A bare ``host:port`` means http. Anything else is a ``ConfigError`` (a ``ValueError``, so
    a model's validator reports it against its field) naming ``service``.
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


def base_url(value: str) -> str:
    """An http(s) URL with a host and no query, fragment or credentials, without its trailing
    slash (``https://example.com/yurt``): what other URLs are built on. Raises ``ValueError``."""
    parts = urlsplit(value)
    if parts.username or parts.password:  # not echoed: the value holds a credential
        raise ValueError("give the URL without credentials")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} has a query or fragment; give the base URL alone")
    try:
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port: {exc}") from None
    return value.rstrip("/")


# One segment of an app id (``owner/app``) and of a URL path, as the admin API checks it.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")


def url_segment(value: str) -> str:
    """``value`` if it is one URL segment (letters, digits, ``_.-``, not ``.`` or ``..``)."""
    if not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not one URL segment: use letters, digits, '_', '.', '-'")
    return value
