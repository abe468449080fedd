"""Datacenters against the Consul and Nomad doubles: runners go where discovery looks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs
from test_consul_discovery import APP, Runners
from test_nomad_backend import JOB, Cluster, cluster

from yurt.backends.nomad.backend import NomadBackend
from yurt.config import ConsulConfig
from yurt.discovery.consul import ConsulDiscovery
from yurt.errors import ClusterUnauthorized
from yurt.spec import build_spec

from doubles import ConsulDouble
from nomad_apps import Tiny
from support import wait_until

__all__ = ["cluster"]  # the fixture, imported so that this module's tests get it


@pytest.fixture
async def east() -> AsyncIterator[ConsulDouble]:
    """A Consul agent of datacenter 'east'."""
    double = ConsulDouble(datacenter="east")
    await double.start()
    yield double
    await double.stop()


async def test_discovery_asks_the_configured_datacenter(east: ConsulDouble) -> None:
    """With a datacenter set, health queries carry ?dc=: runners of that datacenter are found,
    and a datacenter the agent has no path to is an error, never an empty answer."""
    runners = Runners(east)
    seen = ConsulDiscovery(ConsulConfig(addr=east.url, blocking_wait=5), "yurt")
    elsewhere = ConsulDiscovery(
        ConsulConfig(addr=east.url, blocking_wait=5), "yurt", datacenter="west"
    )
    here = ConsulDiscovery(ConsulConfig(addr=east.url, blocking_wait=5), "yurt", datacenter="east")
    try:
        for d in (seen, elsewhere, here):
            await d.start()
        alloc = await runners.add()
        with capture_logs() as logs:
            await wait_until(lambda: [e.runner_id for e in here.healthy(APP)] == [alloc])
            await wait_until(lambda: [e.runner_id for e in seen.healthy(APP)] == [alloc])
            elsewhere.healthy(APP)
            await wait_until(
                lambda: any(
                    e["event"] == "consul_watch_failed" and "No path to datacenter" in e["error"]
                    for e in logs
                ),
                what="the watch of datacenter west failed",
            )
        assert elsewhere.healthy(APP) == []
    finally:
        for d in (seen, elsewhere, here):
            await d.close()
        await runners.close()


async def test_agent_datacenter_is_read_with_the_token() -> None:
    """agent_datacenter is the agent's Config.Datacenter, asked with our token; a token
    without agent:read is told so."""
    # ACLs on: 'root' may do anything, 'reader' read services and nodes but not the agent.
    acl = ConsulDouble(
        datacenter="east", token="root", tokens={"reader": {"service:read", "node:read"}}
    )
    await acl.start()
    try:
        async with ConsulDiscovery(ConsulConfig(addr=acl.url, token="root"), "yurt") as d:
            assert await d.agent_datacenter() == "east"
        async with ConsulDiscovery(ConsulConfig(addr=acl.url, token="reader"), "yurt") as d:
            refused = r"agent\.self.*permission denied.*\[nomad\] datacenters"
            with pytest.raises(ClusterUnauthorized, match=refused):
                await d.agent_datacenter()
    finally:
        await acl.stop()


async def test_jobs_go_to_the_consul_agents_datacenter(cluster: Cluster) -> None:
    """Without [nomad] datacenters, the job's Datacenters are the Consul agent's (read once at
    start), not Nomad's '*' that could place runners where discovery never looks."""
    config = cluster.config()
    assert config.datacenters is None
    backend = NomadBackend(
        config,
        cluster.payloads.links,
        history=cluster.discovery,
        datacenter=cluster.discovery.agent_datacenter,
    )
    await backend.start()
    try:
        await backend.ensure_app("owner/tiny", build_spec(Tiny), cluster.payload(Tiny))
        assert cluster.nomad.jobs[JOB]["Datacenters"] == [cluster.consul.datacenter]
        assert cluster.consul.datacenter == "dc1"
        pinned = config.model_copy(update={"datacenters": ("west",)})
        other = NomadBackend(
            pinned,
            cluster.payloads.links,
            datacenter=cluster.discovery.agent_datacenter,
        )
        await other.start()
        try:
            await other.ensure_app("owner/tiny", build_spec(Tiny), cluster.payload(Tiny))
            assert cluster.nomad.jobs[JOB]["Datacenters"] == ["west"]
        finally:
            await other.stop()
        await backend.deregister_all()
    finally:
        await backend.stop()
