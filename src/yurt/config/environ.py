"""Reading the configuration: the TOML file, the environment, the flags. The only module of
yurt that reads environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from yurt.config.server import ServerConfig
from yurt.config.tls import TLS_ENV
from yurt.errors import ConfigError


def default_data_dir() -> Path:
    """``$YURT_DATA_DIR``, else ``$XDG_DATA_HOME/yurt``, else ``~/.local/share/yurt``."""
    if env := os.environ.get("YURT_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "yurt"


# strconv.ParseBool, which both agents' clients use for their boolean variables.
_GO_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_GO_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def go_bool(name: str, value: str) -> bool:
    """A boolean variable as Go's ``strconv.ParseBool`` reads it; anything else is refused.

    Nomad ignores a value it cannot parse and Consul treats it as false (so an unparsable
    ``CONSUL_HTTP_SSL_VERIFY`` turns verification off): a typo here must not do either.
    """
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false (or 1 or 0)")


def _tls_env(prefix: str, env: Any) -> dict[str, Any]:
    """ClusterTLS fields from the agent's own TLS variables (NOMAD_CACERT, CONSUL_CACERT...)."""
    out: dict[str, Any] = {}
    for field, var in TLS_ENV[prefix].items():
        value = env.get(var)
        if not value:
            continue
        if field != "verify_tls":
            out[field] = value
        elif var == "NOMAD_SKIP_VERIFY":
            out[field] = not go_bool(var, value)
        else:
            out[field] = go_bool(var, value)
    return out


def nomad_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """NomadConfig fields from Nomad's own variables (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT,
    ...); a boolean that is not one is a ConfigError."""
    env = os.environ if environ is None else environ
    names = {"NOMAD_ADDR": "addr", "NOMAD_TOKEN": "token", "NOMAD_NAMESPACE": "namespace"}
    names["NOMAD_REGION"] = "region"
    out: dict[str, Any] = {field: env[var] for var, field in names.items() if env.get(var)}
    return out | _tls_env("NOMAD", env)


def consul_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """ConsulConfig fields from Consul's own variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
    CONSUL_CACERT, ...); a boolean that is not one is a ConfigError."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    if addr := env.get("CONSUL_HTTP_ADDR"):
        # Consul's CLI accepts a bare host:port; CONSUL_HTTP_SSL picks the scheme.
        if "://" not in addr:
            use_ssl = env.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
            addr = f"{'https' if use_ssl else 'http'}://{addr}"
        out["addr"] = addr
    if token := env.get("CONSUL_HTTP_TOKEN"):
        out["token"] = token
    return out | _tls_env("CONSUL", env)


def s3_env(file: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """S3Config credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and
    ``AWS_SESSION_TOKEN``) when ``[files] s3`` is configured without its own: as boto3 ranks
    them, credentials written for the bucket win over the environment's."""
    s3 = file.get("files", {}).get("s3") if isinstance(file.get("files"), dict) else None
    if not isinstance(s3, dict) or "access_key_id" in s3 or "secret_access_key" in s3:
        return {}
    env = os.environ if environ is None else environ
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        return {}
    out = {"access_key_id": key_id, "secret_access_key": secret}
    if token := env.get("AWS_SESSION_TOKEN"):
        out["session_token"] = token
    return out


def local_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """LocalBackendConfig fields from the environment: ``gpus`` from ``$CUDA_VISIBLE_DEVICES``
    when set (empty: no GPU), so that a server started under it hands out only those GPUs."""
    env = os.environ if environ is None else environ
    gpus = env.get("CUDA_VISIBLE_DEVICES")
    return {} if gpus is None else {"gpus": gpus}


def admin_token_env(environ: dict[str, str] | None = None) -> str | None:
    """``$YURT_ADMIN_TOKEN``: the admin API's bearer token, for the server and for deploy."""
    env = os.environ if environ is None else environ
    return env.get("YURT_ADMIN_TOKEN") or None


def server_url_env(environ: dict[str, str] | None = None) -> str:
    """``$YURT_SERVER``, else the server ``yurt server`` starts by default."""
    env = os.environ if environ is None else environ
    return (env.get("YURT_SERVER") or "http://127.0.0.1:8080").rstrip("/")


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file of ``ServerConfig`` fields (sections ``[router]``, ``[nomad]``, ...)."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, section by section. Pure."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def build_server_config(
    file: dict[str, Any], flags: dict[str, Any], environ: dict[str, str] | None = None
) -> ServerConfig:
    """Defaults, then ``$CUDA_VISIBLE_DEVICES`` as ``[local] gpus``, then the file, then Nomad's
    and Consul's variables (and AWS credentials for ``[files] s3``), then flags; validated.

    A mistake names the field: ``nomad.check_interval: Input should be greater than or equal
    to 1``.
    """
    env: dict[str, Any] = {}
    if nomad := nomad_env(environ):
        env["nomad"] = nomad
    if consul := consul_env(environ):
        env["consul"] = consul
    if token := admin_token_env(environ):
        env["admin_token"] = token
    if s3 := s3_env(merged(file, flags), environ):
        env["files"] = {"s3": s3}
    local = local_env(environ)
    values = merged(merged(merged({"local": local} if local else {}, file), env), flags)
    values.setdefault("data_dir", default_data_dir())
    try:
        return ServerConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
