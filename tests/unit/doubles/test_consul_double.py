"""The Consul double behaves as NOMAD_CONSUL.md says Consul does, and no more leniently."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from doubles import ConsulDouble
from support import DEADLINE, wait_until

SERVE = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = open(sys.argv[2]).read() if os.path.exists(sys.argv[2]) else "200"
        self.send_response(int(code))
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture
async def consul() -> AsyncIterator[ConsulDouble]:
    async with ConsulDouble() as double:
        yield double


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
        yield s


@pytest.fixture
def health_server(tmp_path: Path, unused_tcp_port: int) -> Iterator[tuple[int, Path]]:
    """A process answering GET with the status code written in a file (200 when absent)."""
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    code_file = tmp_path / "code"
    proc = subprocess.Popen([sys.executable, str(script), str(unused_tcp_port), str(code_file)])
    try:
        yield unused_tcp_port, code_file
    finally:
        proc.kill()
        proc.wait()


async def put(s: aiohttp.ClientSession, url: str, body: Any = None, **kw: Any) -> tuple[int, str]:
    async with s.put(url, json=body, **kw) as resp:
        return resp.status, await resp.text()


async def health(
    s: aiohttp.ClientSession, consul: ConsulDouble, name: str, **params: str
) -> tuple[list[dict[str, Any]], int]:
    async with s.get(f"{consul.url}/v1/health/service/{name}", params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(), int(resp.headers["X-Consul-Index"])


def ttl_service(sid: str, name: str = "web") -> dict[str, Any]:
    return {"ID": sid, "Name": name, "Port": 80, "Check": {"CheckID": f"c-{sid}", "TTL": "30s"}}


async def test_blocking_query_wakes_on_a_check_change(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """A blocked health query returns when a check of that service changes, with a higher index."""
    assert (await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("a")))[0] == 200
    _, index = await health(http, consul, "web")
    blocked = asyncio.create_task(health(http, consul, "web", index=str(index), wait="60s"))
    await asyncio.sleep(0.2)
    assert not blocked.done()
    assert (await put(http, f"{consul.url}/v1/agent/check/pass/c-a"))[0] == 200
    entries, new_index = await asyncio.wait_for(blocked, DEADLINE)
    assert new_index > index
    assert entries[0]["Checks"][1]["Status"] == "passing"


async def test_blocking_query_times_out_with_the_same_index(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """Without a change the query answers after wait (plus jitter) with the index unchanged."""
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("a"))
    _, index = await health(http, consul, "web")
    _, again = await health(http, consul, "web", index=str(index), wait="200ms")
    assert again == index


async def test_other_services_do_not_wake_a_blocked_query(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """Changes to another service name leave the blocked query waiting."""
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("a"))
    _, index = await health(http, consul, "web")
    blocked = asyncio.create_task(health(http, consul, "web", index=str(index), wait="60s"))
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("b", name="other"))
    await asyncio.sleep(0.3)
    assert not blocked.done()
    consul.set_check_status("c-a", "passing")
    await asyncio.wait_for(blocked, DEADLINE)


async def test_passing_filter_needs_every_check_and_serf_health(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """Checks start critical; passing lists only entries whose checks (and serfHealth) all pass."""
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("a"))
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("b"))
    assert len((await health(http, consul, "web"))[0]) == 2
    assert (await health(http, consul, "web", passing="1"))[0] == []
    await put(http, f"{consul.url}/v1/agent/check/pass/c-b")
    passing, _ = await health(http, consul, "web", passing="1")
    assert [e["Service"]["ID"] for e in passing] == ["b"]
    assert passing[0]["Service"]["Address"] == ""
    assert passing[0]["Node"]["Address"] == "127.0.0.1"
    consul.set_check_status("serfHealth", "critical")
    assert (await health(http, consul, "web", passing="1"))[0] == []


async def test_tag_filter(consul: ConsulDouble, http: aiohttp.ClientSession) -> None:
    """?tag= keeps only entries carrying that tag."""
    body = {"ID": "t", "Name": "web", "Tags": ["blue"], "Port": 1}
    await put(http, f"{consul.url}/v1/agent/service/register", body)
    await put(http, f"{consul.url}/v1/agent/service/register", {"ID": "u", "Name": "web"})
    found, _ = await health(http, consul, "web", tag="blue")
    assert [e["Service"]["ID"] for e in found] == ["t"]


async def test_acl_token_is_required(http: aiohttp.ClientSession) -> None:
    """A wrong token is 403 "ACL not found"; no token is the anonymous one, which may not write."""
    async with ConsulDouble(token="s3cret") as consul:
        url = f"{consul.url}/v1/agent/services"
        async with http.get(url, headers={"X-Consul-Token": "wrong"}) as resp:
            assert resp.status == 403
            assert await resp.text() == "ACL not found"
        async with http.get(url, headers={"X-Consul-Token": "s3cret"}) as resp:
            assert resp.status == 200
        register = f"{consul.url}/v1/agent/service/register"
        status, text = await put(http, register, ttl_service("a"))
        assert status == 403 and text.startswith("Permission denied")
        assert consul.entries("web") == []
        headers = {"X-Consul-Token": "s3cret"}
        assert (await put(http, register, ttl_service("a"), headers=headers))[0] == 200


async def acl_reads(
    http: aiohttp.ClientSession, consul: ConsulDouble, token: str | None
) -> tuple[int, Any, str | None]:
    """Status, body and filtered-by-ACLs header of a health query made with ``token``."""
    headers = {"X-Consul-Token": token} if token is not None else {}
    url = f"{consul.url}/v1/health/service/web"
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers.get("X-Consul-Results-Filtered-By-ACLs")


async def test_token_short_of_service_read_gets_a_filtered_empty_list(
    http: aiohttp.ClientSession,
) -> None:
    """A token without service:read (or node:read) gets 200 [] and the filtered-by-ACLs header."""
    tokens = {"node-only": ["node:read"], "service-only": ["service:read"], "reader": []}
    tokens["reader"] = ["node:read", "service:read"]
    async with ConsulDouble(token="root", tokens=tokens) as consul:
        headers = {"X-Consul-Token": "root"}
        register = f"{consul.url}/v1/agent/service/register"
        assert (await put(http, register, ttl_service("a"), headers=headers))[0] == 200
        for short in ("node-only", "service-only"):
            assert await acl_reads(http, consul, short) == (200, [], "true"), short
        status, found, header = await acl_reads(http, consul, "reader")
        assert (status, [e["Service"]["ID"] for e in found], header) == (200, ["a"], None)
        # Anonymous: filtered too, but Consul masks the header for an empty token.
        assert await acl_reads(http, consul, None) == (200, [], None)
        # Nothing to hide, nothing filtered: no header.
        async with http.get(
            f"{consul.url}/v1/health/service/none", headers={"X-Consul-Token": "node-only"}
        ) as resp:
            assert (resp.status, await resp.json()) == (200, [])
            assert "X-Consul-Results-Filtered-By-ACLs" not in resp.headers


async def test_filtered_catalog_and_agent_reads(http: aiohttp.ClientSession) -> None:
    """Service lists are filtered with the header too; /v1/agent/self needs agent:read."""
    async with ConsulDouble(token="root", tokens={"node-only": ["node:read"]}) as consul:
        register = f"{consul.url}/v1/agent/service/register"
        await put(http, register, ttl_service("a"), headers={"X-Consul-Token": "root"})
        headers = {"X-Consul-Token": "node-only"}
        for path in ("/v1/agent/services", "/v1/catalog/services"):
            async with http.get(consul.url + path, headers=headers) as resp:
                assert resp.status == 200, path
                assert await resp.json() == {}, path
                assert resp.headers["X-Consul-Results-Filtered-By-ACLs"] == "true", path
        async with http.get(f"{consul.url}/v1/agent/self", headers=headers) as resp:
            assert resp.status == 403


@pytest.mark.parametrize(
    "check",
    [
        {"HTTP": "http://127.0.0.1:1/", "Interval": 10},
        {"HTTP": "http://127.0.0.1:1/", "Interval": "10"},
        {"HTTP": "http://127.0.0.1:1/", "Interval": "10s", "Timeout": 2000000000},
        {"HTTP": "http://127.0.0.1:1/"},
        {"TTL": "10s", "Bogus": 1},
    ],
)
async def test_registration_rejects_bad_checks(
    consul: ConsulDouble, http: aiohttp.ClientSession, check: dict[str, Any]
) -> None:
    """Durations must be Go duration strings; unknown keys and interval-less HTTP checks are 400."""
    body = {"ID": "x", "Name": "web", "Check": check}
    status, _ = await put(http, f"{consul.url}/v1/agent/service/register", body)
    assert status == 400
    assert consul.entries("web") == []


async def test_unknown_service_key_is_rejected(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """A misspelled service key is a 400, not silently dropped."""
    body = {"ID": "x", "Name": "web", "Prot": 80}
    assert (await put(http, f"{consul.url}/v1/agent/service/register", body))[0] == 400


async def test_py_consul_style_lowercase_keys_are_accepted(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """Keys match case-insensitively, as Consul's decoder does for py-consul's bodies."""
    body = {
        "name": "web",
        "id": "p",
        "port": 8,
        "checks": [{"ttl": "10s", "DeregisterCriticalServiceAfter": "1m"}],
    }
    assert (await put(http, f"{consul.url}/v1/agent/service/register", body))[0] == 200
    assert consul.entries("web")[0]["Service"]["Port"] == 8


async def test_http_check_runs_and_tracks_the_status_code(
    consul: ConsulDouble, http: aiohttp.ClientSession, health_server: tuple[int, Path]
) -> None:
    """HTTP checks probe the URL: 2xx passing, 429 warning, 500 critical."""
    port, code_file = health_server
    body = {
        "ID": "h",
        "Name": "web",
        "Port": port,
        "Check": {"CheckID": "hc", "HTTP": f"http://127.0.0.1:{port}/", "Interval": "1s"},
    }
    await put(http, f"{consul.url}/v1/agent/service/register", body)

    def status() -> str:
        return str(consul.entries("web")[0]["Checks"][1]["Status"])

    await wait_until(lambda: status() == "passing", what="check passing")
    code_file.write_text("429")
    await wait_until(lambda: status() == "warning", what="check warning")
    code_file.write_text("500")
    await wait_until(lambda: status() == "critical", what="check critical")


async def test_failures_before_critical_holds_the_status(
    consul: ConsulDouble, http: aiohttp.ClientSession, health_server: tuple[int, Path]
) -> None:
    """With FailuresBeforeCritical 3 a passing check stays passing for two failures, no warning."""
    port, code_file = health_server
    check = {
        "CheckID": "hc",
        "HTTP": f"http://127.0.0.1:{port}/",
        "Interval": "1s",
        "FailuresBeforeCritical": 3,
    }
    body = {"ID": "h", "Name": "web", "Port": port, "Check": check}
    assert (await put(http, f"{consul.url}/v1/agent/service/register", body))[0] == 200
    await wait_until(lambda: consul.check_status("hc") == "passing", what="check passing")
    code_file.write_text("500")
    flipped = time.monotonic()
    seen: set[str | None] = set()
    while consul.check_status("hc") != "critical":
        seen.add(consul.check_status("hc"))
        assert time.monotonic() - flipped < DEADLINE, "check never turned critical"
        await asyncio.sleep(0.05)
    # Three failures one interval apart: the third comes at least two intervals after the flip.
    assert time.monotonic() - flipped >= 1.9
    assert seen == {"passing"}


async def test_deregister_removes_service_and_checks(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """Deregistering drops the entry; an unknown id is a 404."""
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("a"))
    assert (await put(http, f"{consul.url}/v1/agent/service/deregister/a"))[0] == 200
    assert consul.entries("web") == []
    assert (await put(http, f"{consul.url}/v1/agent/service/deregister/a"))[0] == 404
    async with http.get(f"{consul.url}/v1/agent/services") as resp:
        assert await resp.json() == {}


async def test_reset_index_goes_backwards(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """After reset_index() the reply's index is below what the client held."""
    await put(http, f"{consul.url}/v1/agent/service/register", ttl_service("a"))
    _, index = await health(http, consul, "web")
    consul.reset_index()
    _, after = await health(http, consul, "web")
    assert after < index


async def test_invalid_wait_is_400(consul: ConsulDouble, http: aiohttp.ClientSession) -> None:
    """wait needs a unit, as Go's time.ParseDuration does."""
    url = f"{consul.url}/v1/health/service/web"
    async with http.get(url, params={"index": "1", "wait": "60"}) as resp:
        assert resp.status == 400
        assert await resp.text() == "Invalid wait time"


async def test_agent_self_catalog_and_leader(
    consul: ConsulDouble, http: aiohttp.ClientSession
) -> None:
    """agent/self carries Config.Version; catalog lists names with tags; a leader is known."""
    await put(http, f"{consul.url}/v1/agent/service/register", {"Name": "web", "Tags": ["x"]})
    async with http.get(f"{consul.url}/v1/agent/self") as resp:
        assert (await resp.json())["Config"]["Version"] == "1.20.2"
    async with http.get(f"{consul.url}/v1/catalog/services") as resp:
        assert (await resp.json())["web"] == ["x"]
    async with http.get(f"{consul.url}/v1/status/leader") as resp:
        assert (await resp.json()).endswith(":8300")
