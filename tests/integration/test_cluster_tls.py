"""yurt's Nomad client and Consul discovery against the doubles served over mutual TLS.

Each double gets a second listener on 127.0.0.1 that speaks TLS with a certificate of a test CA
and asks every client for a certificate of that CA, as agents with ``verify_https_client`` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import ssl
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from structlog.testing import capture_logs

from yurt.backends.base import RunnerEndpoint
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.naming import job_id
from yurt.config import ConsulConfig, NomadConfig
from yurt.discovery.consul import ConsulDiscovery
from yurt.errors import ClusterError, ClusterUnavailable

from doubles import ConsulDouble, NomadDouble
from support import DEADLINE, wait_until

pytestmark = pytest.mark.timeout(120)

APP = "owner/echo"
# The name in the agents' certificates when a test checks tls_server_name: not the address.
AGENT_NAME = "agent.cluster.test"


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a client certificate it signed, and one it did not."""

    ca: trustme.CA
    ca_pem: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    client = ca.issue_cert("yurt-client.test")
    stranger = trustme.CA().issue_cert("yurt-client.test")
    paths = {}
    for name, leaf in (("client", client), ("stranger", stranger)):
        paths[f"{name}_cert"] = tmp_path / f"{name}.pem"
        paths[f"{name}_key"] = tmp_path / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(paths[f"{name}_cert"]))
        leaf.private_key_pem.write_to_path(str(paths[f"{name}_key"]))
    return Pki(ca=ca, ca_pem=ca_pem, **paths)


def server_context(pki: Pki, *names: str) -> ssl.SSLContext:
    """A server context presenting a certificate for ``names`` and requiring client ones."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.ca.issue_cert(*names).configure_cert(ctx)
    pki.ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve_tls(double: Any, ctx: ssl.SSLContext) -> str:
    """Add a TLS listener on an ephemeral loopback port to a started double; its https URL.

    The double's own runner stops it with the plain listener.
    """
    runner: web.AppRunner = double._runner
    before = set(runner.addresses)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    (address,) = set(runner.addresses) - before
    return f"https://127.0.0.1:{address[1]}"


@contextlib.contextmanager
def refused_handshakes() -> Iterator[None]:
    """Around calls whose handshake the double refuses: collect its transports quietly.

    asyncio (3.11) drops the server transport of a TLS handshake it failed without closing
    it, so its ResourceWarning ("unclosed transport") would surface in whatever runs the
    garbage collector next.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed", ResourceWarning)
        yield
        gc.collect()


@pytest.fixture(autouse=True)
def collect_dropped_transports() -> Iterator[None]:
    """After each test's event loop is closed, collect the TLS transports it dropped.

    A TLS connection still shutting down when the loop closes is dropped unclosed too: collect
    it here, where its warning is known, rather than in whichever test collects garbage next.
    """
    yield
    with refused_handshakes():
        pass


@pytest.fixture
async def consul() -> AsyncIterator[ConsulDouble]:
    double = ConsulDouble()
    await double.start()
    yield double
    await double.stop()


@pytest.fixture
async def nomad(tmp_path: Path) -> AsyncIterator[NomadDouble]:
    double = NomadDouble(None, tmp_path / "nomad")
    await double.start()
    yield double
    await double.stop()


def nomad_config(addr: str, **tls: Any) -> NomadConfig:
    return NomadConfig(addr=addr, timeout=DEADLINE / 4, retries=2, **tls)


def mtls(pki: Pki) -> dict[str, Any]:
    return {"ca_cert": pki.ca_pem, "client_cert": pki.client_cert, "client_key": pki.client_key}


async def nomad_version(config: NomadConfig) -> str:
    client = NomadClient(config)
    try:
        return await client.agent_version()
    finally:
        await client.close()


# -- Nomad -------------------------------------------------------------------------------------


async def test_nomad_client_speaks_mutual_tls(nomad: NomadDouble, pki: Pki) -> None:
    """With the CA and a client certificate, the Nomad client talks to an agent over mTLS."""
    url = await serve_tls(nomad, server_context(pki, "127.0.0.1"))
    assert await nomad_version(nomad_config(url, **mtls(pki)))
    client = NomadClient(nomad_config(url, **mtls(pki)))
    try:
        assert await client.get_job("yurt-none") is None  # a 404 over TLS is still a 404
    finally:
        await client.close()


async def test_nomad_without_client_certificate_is_a_clear_error(
    nomad: NomadDouble, pki: Pki
) -> None:
    """Without a client certificate the call fails, and the error names NOMAD_CLIENT_CERT.

    The double's listener closes the connection without a TLS alert (Python's asyncio TLS
    sends none), the worst case: a Go agent's alert is a non-transient error.
    """
    url = await serve_tls(nomad, server_context(pki, "127.0.0.1"))
    with refused_handshakes(), pytest.raises(ClusterError) as caught:
        await nomad_version(nomad_config(url, ca_cert=pki.ca_pem))
    assert "client_cert (NOMAD_CLIENT_CERT) and client_key (NOMAD_CLIENT_KEY)" in str(caught.value)


async def test_nomad_client_certificate_of_another_ca_is_refused(
    nomad: NomadDouble, pki: Pki
) -> None:
    """A client certificate the agent does not trust is refused with the same advice."""
    url = await serve_tls(nomad, server_context(pki, "127.0.0.1"))
    config = nomad_config(
        url, ca_cert=pki.ca_pem, client_cert=pki.stranger_cert, client_key=pki.stranger_key
    )
    with refused_handshakes(), pytest.raises(ClusterError, match=r"NOMAD_CLIENT_CERT"):
        await nomad_version(config)


async def test_nomad_agent_of_an_unknown_ca_is_a_clear_error(nomad: NomadDouble, pki: Pki) -> None:
    """Without the CA the agent's certificate is not trusted, and the error names NOMAD_CACERT."""
    url = await serve_tls(nomad, server_context(pki, "127.0.0.1"))
    config = nomad_config(url, client_cert=pki.client_cert, client_key=pki.client_key)
    with refused_handshakes(), pytest.raises(ClusterError, match=r"NOMAD_CACERT") as caught:
        await nomad_version(config)
    assert not isinstance(caught.value, ClusterUnavailable)


async def test_nomad_tls_server_name(nomad: NomadDouble, pki: Pki) -> None:
    """An agent certificate without the address's host needs tls_server_name, and works with it."""
    url = await serve_tls(nomad, server_context(pki, AGENT_NAME))
    with refused_handshakes(), pytest.raises(ClusterError, match=r"NOMAD_TLS_SERVER_NAME"):
        await nomad_version(nomad_config(url, **mtls(pki)))
    assert await nomad_version(nomad_config(url, tls_server_name=AGENT_NAME, **mtls(pki)))


# -- Consul ------------------------------------------------------------------------------------


async def register_passing(consul: ConsulDouble, service: str, port: int) -> None:
    """Register a service with a TTL check and pass it (over the double's plain listener)."""
    body = {
        "ID": f"_nomad-task-0000-group-runner-{service}-http",
        "Name": service,
        "Address": "127.0.0.1",
        "Port": port,
        "Checks": [{"CheckID": "ttl-0000", "Name": "ttl", "TTL": "60s"}],
    }
    async with aiohttp.ClientSession() as s:
        async with s.put(consul.url + "/v1/agent/service/register", json=body) as resp:
            assert resp.status == 200, await resp.text()
        async with s.put(consul.url + "/v1/agent/check/pass/ttl-0000") as resp:
            assert resp.status == 200, await resp.text()


async def test_consul_discovery_speaks_mutual_tls(consul: ConsulDouble, pki: Pki) -> None:
    """Over mTLS the discovery follows healthy runners and registers the router."""
    url = await serve_tls(consul, server_context(pki, "127.0.0.1"))
    await register_passing(consul, job_id("yurt", APP), 4321)
    config = ConsulConfig(addr=url, blocking_wait=5, **mtls(pki))
    async with ConsulDiscovery(config, "yurt") as discovery:
        discovery.healthy(APP)
        await wait_until(lambda: discovery.healthy(APP), DEADLINE, "a healthy runner over TLS")
        assert [e.port for e in discovery.healthy(APP)] == [4321]
        assert isinstance(discovery.healthy(APP)[0], RunnerEndpoint)
        service_id = await discovery.register_router(
            "yurt-router", "127.0.0.1", 8080, "http://127.0.0.1:8080/health", 10.0
        )
        assert consul.check_ids(service_id)


async def test_consul_without_client_certificate_is_a_clear_error(
    consul: ConsulDouble, pki: Pki
) -> None:
    """Without a client certificate Consul calls fail, and the errors name CONSUL_CLIENT_CERT."""
    url = await serve_tls(consul, server_context(pki, "127.0.0.1"))
    config = ConsulConfig(addr=url, blocking_wait=5, ca_cert=pki.ca_pem)
    async with ConsulDiscovery(config, "yurt") as discovery:
        with refused_handshakes(), pytest.raises(ClusterError) as caught:
            await discovery.register_router("yurt-router", "127.0.0.1", 1, "http://x/", 1.0)
        assert "client_cert (CONSUL_CLIENT_CERT)" in str(caught.value)
        with refused_handshakes(), capture_logs() as logs:
            discovery.healthy(APP)
            await wait_until(
                lambda: any(e["event"] == "consul_watch_failed" for e in logs),
                DEADLINE,
                "the watch to log its failure",
            )
        error = next(e["error"] for e in logs if e["event"] == "consul_watch_failed")
        assert "CONSUL_CLIENT_CERT" in error


async def test_consul_agent_of_an_unknown_ca_is_a_clear_error(
    consul: ConsulDouble, pki: Pki
) -> None:
    """Without the CA, Consul's certificate is not trusted, and the error names CONSUL_CACERT."""
    url = await serve_tls(consul, server_context(pki, "127.0.0.1"))
    config = ConsulConfig(addr=url, client_cert=pki.client_cert, client_key=pki.client_key)
    async with ConsulDiscovery(config, "yurt") as discovery:
        with refused_handshakes(), pytest.raises(ClusterError, match=r"CONSUL_CACERT") as caught:
            await discovery.register_router("yurt-router", "127.0.0.1", 1, "http://x/", 1.0)
        assert not isinstance(caught.value, ClusterUnavailable)


async def test_consul_tls_server_name(consul: ConsulDouble, pki: Pki) -> None:
    """A Consul certificate without the address's host works with tls_server_name only."""
    url = await serve_tls(consul, server_context(pki, AGENT_NAME))
    async with ConsulDiscovery(ConsulConfig(addr=url, **mtls(pki)), "yurt") as discovery:
        with refused_handshakes(), pytest.raises(ClusterError, match=r"CONSUL_TLS_SERVER_NAME"):
            await discovery.register_router("yurt-router", "127.0.0.1", 1, "http://x/", 1.0)
    config = ConsulConfig(addr=url, tls_server_name=AGENT_NAME, **mtls(pki))
    async with ConsulDiscovery(config, "yurt") as discovery:
        service_id = await discovery.register_router(
            "yurt-router", "127.0.0.1", 1, "http://x/", 1.0
        )
        assert consul.check_ids(service_id)


# -- yurt doctor -------------------------------------------------------------------------------


async def doctor(env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``yurt doctor`` with only ``env`` of the agents' variables; its code and lines."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "yurt.cli", "doctor",
        env={**base, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert not err, err.decode()
    return proc.returncode or 0, out.decode().splitlines()


def line_of(lines: list[str], name: str) -> str:
    return next(line for line in lines if line.split()[1:2] == [f"{name}:"])


async def test_doctor_reports_and_uses_the_tls_settings(
    nomad: NomadDouble, consul: ConsulDouble, pki: Pki
) -> None:
    """yurt doctor reaches both agents over mTLS with their variables, and says what it used."""
    nomad_url = await serve_tls(nomad, server_context(pki, AGENT_NAME))
    consul_url = await serve_tls(consul, server_context(pki, "127.0.0.1"))
    env = {
        "NOMAD_ADDR": nomad_url,
        "NOMAD_CACERT": str(pki.ca_pem),
        "NOMAD_CLIENT_CERT": str(pki.client_cert),
        "NOMAD_CLIENT_KEY": str(pki.client_key),
        "NOMAD_TLS_SERVER_NAME": AGENT_NAME,
        "CONSUL_HTTP_ADDR": consul_url,
        "CONSUL_CACERT": str(pki.ca_pem),
        "CONSUL_CLIENT_CERT": str(pki.client_cert),
        "CONSUL_CLIENT_KEY": str(pki.client_key),
    }
    _, lines = await doctor(env)
    nomad_line, consul_line = line_of(lines, "nomad"), line_of(lines, "consul")
    assert nomad_line.startswith(f"OK    nomad: {nomad_url} answers")
    assert f"(TLS: CA {pki.ca_pem}, client certificate {pki.client_cert}" in nomad_line
    assert f"server name {AGENT_NAME})" in nomad_line
    assert consul_line.startswith(f"OK    consul: {consul_url} answers")
    assert f"(TLS: CA {pki.ca_pem}, client certificate {pki.client_cert})" in consul_line


async def test_doctor_tls_failures_name_the_setting(
    nomad: NomadDouble, consul: ConsulDouble, pki: Pki, tmp_path: Path
) -> None:
    """An untrusted agent names NOMAD_CACERT; a missing file names CONSUL_CLIENT_CERT; exit 1."""
    nomad_url = await serve_tls(nomad, server_context(pki, "127.0.0.1"))
    consul_url = await serve_tls(consul, server_context(pki, "127.0.0.1"))
    env = {
        "NOMAD_ADDR": nomad_url,
        "CONSUL_HTTP_ADDR": consul_url,
        "CONSUL_CLIENT_CERT": str(tmp_path / "missing.pem"),
        "CONSUL_CLIENT_KEY": str(pki.client_key),
    }
    with refused_handshakes():
        code, lines = await doctor(env)
    assert code == 1
    nomad_line, consul_line = line_of(lines, "nomad"), line_of(lines, "consul")
    assert nomad_line.startswith(f"FAIL  nomad: {nomad_url}: TLS handshake failed")
    assert "ca_cert (NOMAD_CACERT)" in nomad_line
    assert consul_line.startswith("FAIL  consul: invalid TLS settings")
    assert "client_cert (CONSUL_CLIENT_CERT)" in consul_line and "missing.pem" in consul_line


# -- yurt server -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("key", "client_cert (NOMAD_CLIENT_CERT) is set but client_key (NOMAD_CLIENT_KEY) is not"),
     ("junk", "ca_cert (NOMAD_CACERT): cannot load")],
)  # fmt: skip
async def test_server_stops_on_bad_tls_settings_in_one_line(
    pki: Pki, tmp_path: Path, setting: str, expected: str
) -> None:
    """yurt server stops at once on a certificate without its key or a CA file that is not PEM."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    env = {"NOMAD_ADDR": "https://127.0.0.1:9", "CONSUL_HTTP_ADDR": "http://127.0.0.1:9"}
    if setting == "key":
        env["NOMAD_CLIENT_CERT"] = str(pki.client_cert)
    else:
        env["NOMAD_CACERT"] = str(junk)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "yurt.cli", "server", "--backend", "nomad", "--port", "0",
        "--data-dir", str(tmp_path / "data"), env={**base, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 1
    assert err.decode().startswith("yurt server: ") and err.decode().count("\n") == 1
    assert expected in err.decode()
