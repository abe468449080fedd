"""``yurt doctor``: what this machine has for yurt, one line per check, OK or how to fix it.

Checks Python, the packages yurt needs, the GPUs NVML sees, and whether Nomad and Consul answer
(``GET /v1/agent/self``) when an address is given (``--nomad-addr``, ``--consul-addr``) or set in
``NOMAD_ADDR`` / ``CONSUL_HTTP_ADDR``. Over https it uses, and reports, the TLS settings the
server would (``NOMAD_CACERT``, ``CONSUL_CLIENT_CERT``, ...). Exits 0 when every required check
passes; a machine without GPUs is normal and only noted.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import platform
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from yurt.config import ClusterTLS, ConsulConfig, NomadConfig, consul_env, nomad_env, tls_failure
from yurt.errors import ConfigError
from yurt.gpus import list_gpus, load_nvml
from yurt.machines import machine_types_of_gpu

MIN_PYTHON = (3, 11)
# (distribution, what pyproject.toml asks for, required): the runtime dependencies.
PACKAGES: tuple[tuple[str, str, bool], ...] = (
    ("aiohttp", ">=3.9", True),
    ("pydantic", ">=2.5", True),
    ("pydantic-core", "", True),
    ("cloudpickle", ">=3.0", True),
    ("structlog", ">=24.1", True),
    ("tenacity", ">=8.2", True),
    ("httptools", ">=0.6", True),
    ("python-nomad", ">=2.0", True),
    ("py-consul", ">=1.5", True),
    ("nvidia-ml-py", ">=12.535", True),
    ("uvloop", ">=0.19", False),
)
HTTP_TIMEOUT = 5.0

Fetch = Callable[[str, dict[str, str]], Any]
# The TLS settings of one agent, or why they are not usable (a file missing, a bad boolean).
TLS = ClusterTLS | str
_TLS_FIELDS = frozenset(ClusterTLS.model_fields)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        """``OK    name: detail`` / ``FAIL  name: detail; fix: ...`` / ``--    ...`` (optional)."""
        mark = "OK" if self.ok else ("FAIL" if self.required else "--")
        text = f"{mark:<5} {self.name}: {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix and not self.ok else text


def add_parser(commands: Any) -> None:
    """Register ``doctor`` on the subcommand parser."""
    p: argparse.ArgumentParser = commands.add_parser(
        "doctor", help="check Python, packages, GPUs, and whether Nomad and Consul answer"
    )
    p.add_argument("--nomad-addr", default=None, help="Nomad's HTTP API (default: $NOMAD_ADDR)")
    p.add_argument(
        "--consul-addr", default=None, help="Consul's HTTP API (default: $CONSUL_HTTP_ADDR)"
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the report; 0 when every required check passed, else 1."""
    nomad, nomad_tls = cluster_settings(nomad_env, NomadConfig)
    consul, consul_tls = cluster_settings(consul_env, ConsulConfig)
    checks = run_checks(
        nomad_addr=args.nomad_addr or nomad.get("addr"),
        nomad_token=nomad.get("token"),
        nomad_tls=nomad_tls,
        consul_addr=args.consul_addr or consul.get("addr"),
        consul_token=consul.get("token"),
        consul_tls=consul_tls,
    )
    for check in checks:
        print(check.line())
    return exit_code(checks)


def cluster_settings(
    read: Callable[[], dict[str, Any]], model: type[ClusterTLS]
) -> tuple[dict[str, Any], TLS]:
    """An agent's settings from its variables, and its TLS settings validated (or why not)."""
    try:
        fields = read()
    except ConfigError as exc:
        return {}, str(exc)
    try:
        tls = model.model_validate({k: v for k, v in fields.items() if k in _TLS_FIELDS})
    except ValidationError as exc:
        return fields, "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
    return fields, tls


def exit_code(checks: Sequence[Check]) -> int:
    """0 when every required check passed."""
    return 0 if all(c.ok for c in checks if c.required) else 1


def run_checks(
    *,
    nomad_addr: str | None = None,
    nomad_token: str | None = None,
    consul_addr: str | None = None,
    consul_token: str | None = None,
    nomad_tls: TLS | None = None,
    consul_tls: TLS | None = None,
    nvml: Any | None = None,
    version_of: Callable[[str], str] = metadata.version,
    fetch: Fetch | None = None,
) -> list[Check]:
    """Every check, in report order. ``nvml`` None: the real pynvml, if installed. ``fetch``
    None: HTTP calls with each agent's TLS settings."""
    checks = [check_python(), check_yurt(version_of)]
    checks += [check_package(name, spec, required, version_of) for name, spec, required in PACKAGES]
    checks += check_gpus(nvml if nvml is not None else load_nvml())
    nomad_tls = nomad_tls if nomad_tls is not None else NomadConfig()
    consul_tls = consul_tls if consul_tls is not None else ConsulConfig()
    checks.append(check_nomad(nomad_addr, nomad_token, fetch or _fetcher(nomad_tls), nomad_tls))
    checks.append(
        check_consul(consul_addr, consul_token, fetch or _fetcher(consul_tls), consul_tls)
    )
    return checks


def _fetcher(tls: TLS) -> Fetch:
    return functools.partial(fetch_json, tls=tls if isinstance(tls, ClusterTLS) else None)


def check_python() -> Check:
    """The interpreter is new enough."""
    version = platform.python_version()
    ok = sys.version_info[:2] >= MIN_PYTHON
    need = ".".join(map(str, MIN_PYTHON))
    return Check("python", ok, f"{version} ({sys.executable})", f"use Python >= {need}")


def check_yurt(version_of: Callable[[str], str]) -> Check:
    """yurt's own version, installed or run from a source tree."""
    import yurt

    try:
        return Check("yurt", True, version_of("yurt"))
    except metadata.PackageNotFoundError:
        return Check("yurt", True, f"{yurt.__version__} (not installed; from {yurt.__path__[0]})")


def check_package(name: str, spec: str, required: bool, version_of: Callable[[str], str]) -> Check:
    """One distribution is installed."""
    try:
        return Check(name, True, version_of(name), required=required)
    except metadata.PackageNotFoundError:
        return Check(name, False, "not installed", f"pip install '{name}{spec}'", required)


def check_gpus(nvml: Any | None) -> list[Check]:
    """The GPUs NVML sees, each with the machine types it serves. None is not a failure."""
    listing = list_gpus(nvml)
    if not listing.gpus:
        return [
            Check(
                "gpus",
                False,
                f"none ({listing.error})",
                "GPU apps need an NVIDIA GPU, its driver and nvidia-ml-py; CPU apps need none",
                required=False,
            )
        ]
    checks = [Check("gpus", True, f"{len(listing.gpus)} found through NVML")]
    for g in listing.gpus:
        types = machine_types_of_gpu(g.name, g.memory_total_mib)
        serves = ", ".join(types) if types else "no machine type of the catalog"
        detail = f"{g.name}, {g.memory_total_mib} MiB, {g.uuid}; serves {serves}"
        checks.append(Check(f"gpu {g.index}", True, detail))
    return checks


def check_nomad(addr: str | None, token: str | None, fetch: Fetch, tls: TLS | None = None) -> Check:
    """Nomad answers ``/v1/agent/self``; its version, and the TLS settings used over https."""
    if not addr:
        return _not_checked("nomad", "--nomad-addr", "NOMAD_ADDR")
    if isinstance(tls, str):
        return _bad_tls("nomad", tls, "NOMAD")
    headers = {"X-Nomad-Token": token} if token else {}
    try:
        body = fetch(addr.rstrip("/") + "/v1/agent/self", headers)
        version = body["config"]["Version"]
        # Nomad >= 0.9 nests it: {"Version": "1.9.3", "VersionPrerelease": "", ...}.
        version = version["Version"] if isinstance(version, dict) else version
    except Exception as exc:
        return _unreachable("nomad", addr, exc, "NOMAD_ADDR", "NOMAD_TOKEN", tls)
    return Check("nomad", True, f"{addr} answers, Nomad {version}{_tls_note(addr, tls)}")


def check_consul(
    addr: str | None, token: str | None, fetch: Fetch, tls: TLS | None = None
) -> Check:
    """Consul answers ``/v1/agent/self``; its version, and the TLS settings used over https."""
    if not addr:
        return _not_checked("consul", "--consul-addr", "CONSUL_HTTP_ADDR")
    if isinstance(tls, str):
        return _bad_tls("consul", tls, "CONSUL")
    headers = {"X-Consul-Token": token} if token else {}
    try:
        version = fetch(addr.rstrip("/") + "/v1/agent/self", headers)["Config"]["Version"]
    except Exception as exc:
        return _unreachable("consul", addr, exc, "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", tls)
    return Check("consul", True, f"{addr} answers, Consul {version}{_tls_note(addr, tls)}")


def _tls_note(addr: str, tls: ClusterTLS | None) -> str:
    """`` (TLS: CA /etc/ca.pem, client certificate ...)`` for an https address."""
    if tls is None or not addr.lower().startswith("https://"):
        return ""
    return f" (TLS: {tls.describe()})"


def _bad_tls(name: str, problem: str, prefix: str) -> Check:
    fix = f"fix the TLS settings ({prefix}_CACERT, {prefix}_CLIENT_CERT, {prefix}_CLIENT_KEY, ...)"
    return Check(name, False, f"invalid TLS settings: {problem}", fix)


def _not_checked(name: str, flag: str, env: str) -> Check:
    return Check(name, False, "not checked", f"give {flag} or set {env} to check it", False)


def _unreachable(
    name: str,
    addr: str,
    exc: Exception,
    addr_env: str,
    token_env: str,
    tls: ClusterTLS | None = None,
) -> Check:
    note = _tls_note(addr, tls)
    failure = tls_failure(exc)
    advice = type(tls).handshake_advice(failure) if tls and failure else None
    if isinstance(exc, ConfigError):
        fix, detail = "fix the TLS settings", f"{exc}{note}"
    elif advice is not None:
        fix, detail = advice, f"{addr}: TLS handshake failed{note}"
    elif isinstance(exc, urllib.error.HTTPError) and exc.code in (401, 403):
        fix = f"set {token_env} to a token whose policy allows agent:read"
        detail = f"{addr} refused the token (HTTP {exc.code})"
    elif isinstance(exc, urllib.error.HTTPError):
        fix, detail = f"check that {addr} is {name}'s HTTP API", f"{addr} answered HTTP {exc.code}"
    elif isinstance(exc, (KeyError, TypeError, ValueError)):
        fix = f"check that {addr} is {name}'s HTTP API"
        detail = f"{addr} answered, but not as {name}'s /v1/agent/self does ({exc!r})"
    else:
        reason = getattr(exc, "reason", exc)
        fix = f"start {name}, or give the right address (--{name}-addr or {addr_env})"
        if tls is not None:
            fix += type(tls).disconnect_hint(addr)
        detail = f"{addr} does not answer ({reason}){note}"
    return Check(name, False, detail, fix)


def fetch_json(url: str, headers: dict[str, str], tls: ClusterTLS | None = None) -> Any:
    """GET a JSON document (stdlib only: two calls do not need a client), over https with
    ``tls``'s CA, client certificate and server name."""
    handlers: list[urllib.request.BaseHandler] = []
    if tls is not None and url.lower().startswith("https://"):
        handlers.append(_HTTPSHandler(tls.ssl_context(), tls.tls_server_name))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    with opener.open(request, timeout=HTTP_TIMEOUT) as response:
        return json.loads(response.read())


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """https with our SSLContext, sending and checking ``server_name`` when one is set."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._ssl_context = context
        self._server_name = server_name

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        if not self._server_name:
            return super().https_open(req)
        connection = functools.partial(
            _NamedHTTPSConnection, server_name=self._server_name, ssl_context=self._ssl_context
        )
        return self.do_open(connection, req)


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """An https connection whose TLS names ``server_name`` rather than the host it dials."""

    def __init__(
        self, host: str, *, server_name: str, ssl_context: ssl.SSLContext, **kwargs: Any
    ) -> None:
        super().__init__(host, context=ssl_context, **kwargs)
        self._server_name = server_name
        self._ssl_context = ssl_context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ssl_context.wrap_socket(self.sock, server_hostname=self._server_name)
