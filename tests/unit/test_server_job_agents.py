"""jobs/yurt-server.json: the local agents on 127.0.0.1, and a router check aimed at the instance.

Nomad interpolates ``${...}`` in the task's args and Env before the task starts; these tests do
the same with the values a node would give, then read the result as ``yurt server`` does.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from yurt.cli.main import build_parser
from yurt.cli.options import flags_from_args
from yurt.config import ServerConfig, build_server_config, read_config_file
from yurt.platform import instance_address

ROOT = Path(__file__).resolve().parents[2]
SERVER_JOB = ROOT / "jobs" / "yurt-server.json"

# What a node whose address is 10.0.0.5 gives the task for the group's "http" port
# (client/taskenv/env.go, addPorts): NOMAD_IP_, NOMAD_PORT_ and NOMAD_ADDR_ of the label.
NODE = {
    "NOMAD_IP_http": "10.0.0.5",
    "NOMAD_PORT_http": "8080",
    "NOMAD_ADDR_http": "10.0.0.5:8080",
}
LOAD_BALANCER = "https://yurt.example.com"


def group() -> dict[str, Any]:
    body = json.loads(SERVER_JOB.read_text())
    (g,) = body["Job"]["TaskGroups"]
    return dict(g)


def task() -> dict[str, Any]:
    (t,) = group()["Tasks"]
    return dict(t)


def interpolate(value: str) -> str:
    """``value`` with the node's ``${...}`` put in; an unknown reference fails the test."""

    def one(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in NODE:
            pytest.fail(f"the job references ${{{name}}}, which this test does not model")
        return NODE[name]

    return re.sub(r"\$\{([^}]+)\}", one, value)


def server_config(t: dict[str, Any], public_url: str | None = None) -> ServerConfig:
    """The configuration ``yurt server`` builds from the job's args and Env on that node."""
    args = [interpolate(a) for a in t["Config"]["args"]]
    if public_url is not None:  # what README asks the operator to put there
        args[args.index("--public-url") + 1] = public_url
    env = {k: interpolate(v) for k, v in t["Env"].items()} | {"YURT_ADMIN_TOKEN": "t"}
    parsed = build_parser().parse_args(args)
    file = read_config_file(parsed.config) if parsed.config else {}
    return build_server_config(file, flags_from_args(parsed), env)


def test_agents_are_reached_on_the_nodes_loopback() -> None:
    """NOMAD_ADDR and CONSUL_HTTP_ADDR name 127.0.0.1, inside the node's network namespace."""
    config = server_config(task())
    for addr, port in ((config.nomad.addr, 4646), (config.consul.addr, 8500)):
        where = urlsplit(addr)
        assert where.hostname is not None and ipaddress.ip_address(where.hostname).is_loopback
        assert where.port == port
    # 127.0.0.1 is the node's only in the node's namespace: drivers/docker/driver.go gives a
    # container without network_mode Docker's default bridge, whose loopback is its own.
    t = task()
    assert t["Driver"] == "docker"
    assert t["Config"]["network_mode"] == "host"
    (network,) = group()["Networks"]
    assert network["Mode"] == "host"
    assert [p["Label"] for p in network["ReservedPorts"]] == ["http"]


def test_router_listens_on_the_instance_address() -> None:
    """The server listens on the address and port Nomad gives the "http" port, not 0.0.0.0."""
    args = task()["Config"]["args"]
    assert args[args.index("--host") + 1] == "${NOMAD_IP_http}"
    assert args[args.index("--port") + 1] == "${NOMAD_PORT_http}"
    config = server_config(task())
    assert (config.router.host, config.router.port) == ("10.0.0.5", 8080)


def test_router_check_is_aimed_at_the_instance() -> None:
    """Behind a load balancer, the router registers and checks its own address, not the LB's."""
    config = server_config(task(), public_url=LOAD_BALANCER)
    assert config.router.public_url == LOAD_BALANCER
    tls = config.router.tls_cert is not None
    got = instance_address(config.router.host, config.router.port, tls, LOAD_BALANCER)
    assert got == ("10.0.0.5", 8080, "http://10.0.0.5:8080")
