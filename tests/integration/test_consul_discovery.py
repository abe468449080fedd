"""Consul discovery against the Consul double: real HTTP, real checks, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from yurt.backends.base import RunnerEndpoint
from yurt.backends.nomad.naming import job_id
from yurt.config import ConsulConfig
from yurt.discovery.consul import ConsulDiscovery
from yurt.errors import ClusterUnauthorized

from doubles import ConsulDouble
from support import DEADLINE, wait_until

APP = "owner/echo"
SERVICE = job_id("yurt", APP)

# A stand-in for a runner: answers 200 on /_yurt/health until it is killed.
HEALTH_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path.startswith("/_yurt/health") else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_port, flush=True)
server.serve_forever()
"""


class Runners:
    """Stand-in runner processes, registered in Consul the way Nomad registers a group service."""

    def __init__(self, consul: ConsulDouble) -> None:
        self.consul = consul
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def add(self, *, service: str = SERVICE, address: str = "127.0.0.1") -> str:
        """Start one and register it; returns its allocation id."""
        alloc = str(uuid.uuid4())
        self.procs[alloc], port = await health_server()
        body = {
            "ID": f"_nomad-task-{alloc}-group-runner-{service}-http",
            "Name": service,
            "Tags": ["yurt"],
            "Address": address,
            "Port": port,
            "Meta": {"external-source": "nomad"},
            "Checks": [
                {
                    "Name": "yurt-health",
                    "HTTP": f"http://127.0.0.1:{port}/_yurt/health",
                    "Interval": "1s",
                    "Timeout": "1s",
                }
            ],
        }
        await put(self.consul, "/v1/agent/service/register", body)
        return alloc

    async def kill(self, alloc: str) -> None:
        proc = self.procs.pop(alloc)
        proc.kill()
        await proc.wait()

    async def close(self) -> None:
        for alloc in list(self.procs):
            await self.kill(alloc)


async def health_server() -> tuple[asyncio.subprocess.Process, int]:
    """A health endpoint in a process of its own, on a port it bound itself (a port picked here
    and bound there could be taken meanwhile by any server binding port 0): it and its port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HEALTH_SERVER,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
        return proc, int(line)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


async def put(consul: ConsulDouble, path: str, body: Any = None) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.put(consul.url + path, json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.fixture
async def consul() -> AsyncIterator[ConsulDouble]:
    double = ConsulDouble()
    await double.start()
    yield double
    await double.stop()


@pytest.fixture
async def runners(consul: ConsulDouble) -> AsyncIterator[Runners]:
    r = Runners(consul)
    yield r
    await r.close()


@pytest.fixture
async def discovery(consul: ConsulDouble) -> AsyncIterator[ConsulDiscovery]:
    d = ConsulDiscovery(ConsulConfig(addr=consul.url, blocking_wait=5), "yurt")
    await d.start()
    yield d
    await d.close()


class Follower:
    """Collects what ``watch`` yields, as the router's ``_follow`` consumes it."""

    def __init__(self, discovery: ConsulDiscovery) -> None:
        self.seen: list[list[RunnerEndpoint]] = []
        self.task = asyncio.create_task(self._run(discovery))

    async def _run(self, discovery: ConsulDiscovery) -> None:
        async for endpoints in discovery.watch(APP):
            self.seen.append(endpoints)

    def ids(self) -> set[str]:
        return {e.runner_id for e in self.seen[-1]} if self.seen else set()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_runner_appears_when_check_passes_and_goes_when_killed(
    consul: ConsulDouble, runners: Runners, discovery: ConsulDiscovery
) -> None:
    """watch yields at once, then the runner once its check passes, and drops it when killed."""
    follower = Follower(discovery)
    try:
        await wait_until(lambda: follower.seen, what="the first yield")
        assert follower.seen[0] == []
        alloc = await runners.add()
        await wait_until(lambda: alloc in follower.ids(), what="runner healthy")
        endpoint = follower.seen[-1][0]
        assert (endpoint.host, endpoint.runner_id) == ("127.0.0.1", alloc)
        assert discovery.healthy(APP) == [endpoint]
        assert discovery.was_healthy(APP, alloc)
        await runners.kill(alloc)
        await wait_until(lambda: not follower.ids(), what="killed runner dropped")
        assert discovery.healthy(APP) == []
        assert discovery.was_healthy(APP, alloc)  # history outlives the runner
    finally:
        await follower.close()


async def test_empty_service_address_uses_node_address(
    consul: ConsulDouble, runners: Runners, discovery: ConsulDiscovery
) -> None:
    """A service registered without an address is reached at its node's address."""
    alloc = await runners.add(address="")
    discovery.healthy(APP)
    await wait_until(lambda: discovery.healthy(APP), what="runner healthy")
    assert discovery.healthy(APP)[0].host == consul.node_address
    assert discovery.healthy(APP)[0].runner_id == alloc


async def test_no_yield_without_a_change(
    consul: ConsulDouble, runners: Runners, discovery: ConsulDiscovery
) -> None:
    """A wake-up that leaves the healthy set as it was yields nothing."""
    follower = Follower(discovery)
    try:
        alloc = await runners.add()
        await wait_until(lambda: alloc in follower.ids(), what="runner healthy")
        yields = len(follower.seen)
        before = len(consul.requests)
        # A critical instance changes the service's index, not its passing set.
        other = await runners.add()
        other_sid = f"_nomad-task-{other}-group-runner-{SERVICE}-http"
        consul.set_check_status(consul.check_ids(other_sid)[0], "critical")
        await wait_until(
            lambda: sum(1 for m, p in consul.requests[before:] if "/health/" in p) >= 2,
            what="the watch woke up",
        )
        assert len(follower.seen) == yields
        assert follower.ids() == {alloc}
    finally:
        await follower.close()


async def test_index_going_backwards_is_reset(
    consul: ConsulDouble, runners: Runners, discovery: ConsulDiscovery
) -> None:
    """After Consul's index goes backwards the watch starts again from 0 and keeps up."""
    follower = Follower(discovery)
    try:
        first = await runners.add()
        await wait_until(lambda: first in follower.ids(), what="first runner healthy")
        with capture_logs() as logs:
            consul.reset_index()
            second = await runners.add()
            await wait_until(lambda: second in follower.ids(), what="second runner healthy")
        assert any(e["event"] == "consul_index_reset" for e in logs)
        assert follower.ids() == {first, second}
    finally:
        await follower.close()


async def test_router_registration(consul: ConsulDouble, discovery: ConsulDiscovery) -> None:
    """The router registers under its own id with a passing HTTP check, and deregisters."""
    proc, port = await health_server()
    try:
        sid = await discovery.register_router(
            "yurt-router", "127.0.0.1", port, f"http://127.0.0.1:{port}/_yurt/health", 1.0
        )
        assert sid == f"yurt-router-127.0.0.1-{port}"
        assert not sid.startswith("_nomad-task-")
        await wait_until(
            lambda: consul.entries("yurt-router", passing=True), what="router check passing"
        )
        await discovery.deregister_router()
        assert consul.entries("yurt-router") == []
    finally:
        proc.kill()
        await proc.wait()


async def test_bad_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused token is ClusterUnauthorized; $CONSUL_HTTP_TOKEN does not replace ours."""
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "secret")  # right token, but not the configured one
    double = ConsulDouble(token="secret")
    await double.start()
    discovery = ConsulDiscovery(ConsulConfig(addr=double.url, token="wrong"), "yurt")
    try:
        with pytest.raises(ClusterUnauthorized, match=r"ConsulConfig\.token"):
            await discovery.register_router("yurt-router", "127.0.0.1", 1, "http://x/", 1.0)
        with capture_logs() as logs:
            discovery.healthy(APP)
            await wait_until(
                lambda: any(e["event"] == "consul_watch_failed" for e in logs),
                DEADLINE,
                "the watch to log its failure",
            )
        assert "permission denied" in next(
            e["error"] for e in logs if e["event"] == "consul_watch_failed"
        )
    finally:
        await discovery.close()
        await double.stop()


async def test_results_filtered_by_acls_warn_once_per_app() -> None:
    """A token short of service:read sees no runners and logs one warning, not one per poll."""
    double = ConsulDouble(token="root", tokens={"narrow": ["node:read"]})
    await double.start()
    body = {
        "ID": f"_nomad-task-{uuid.uuid4()}-group-runner-{SERVICE}-http",
        "Name": SERVICE,
        "Port": 1,
        "Check": {"CheckID": "ttl", "TTL": "600s", "Status": "passing"},
    }
    async with (
        aiohttp.ClientSession() as s,
        s.put(
            f"{double.url}/v1/agent/service/register",
            json=body,
            headers={"X-Consul-Token": "root"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
    assert len(double.entries(SERVICE, passing=True)) == 1
    discovery = ConsulDiscovery(
        ConsulConfig(addr=double.url, token="narrow", blocking_wait=1), "yurt"
    )
    polls = ("GET", f"/v1/health/service/{SERVICE}")
    try:
        with capture_logs() as logs:
            assert discovery.healthy(APP) == []
            await wait_until(
                lambda: any(e["event"] == "consul_results_filtered_by_acls" for e in logs),
                DEADLINE,
                "the filtered-by-ACLs warning",
            )
            seen = double.requests.count(polls)
            await wait_until(
                lambda: double.requests.count(polls) >= seen + 3,
                DEADLINE,
                "three more health polls",
            )
        warnings = [e for e in logs if e["event"] == "consul_results_filtered_by_acls"]
        assert len(warnings) == 1
        assert warnings[0]["app"] == APP and warnings[0]["log_level"] == "warning"
        assert "service:read" in warnings[0]["detail"]
        assert "narrow" not in str(warnings[0])  # the token itself is never logged
        assert discovery.healthy(APP) == []
    finally:
        await discovery.close()
        await double.stop()
