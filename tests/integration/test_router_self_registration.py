"""`yurt server --backend nomad` registers its router in Consul at the instance, not the LB.

The server is a real process; Consul and Nomad are the doubles. The public URL names a loopback
stand-in for a load balancer that accepts connections and answers none: a check sent there
would fail, and the stand-in counts every connection it gets.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from doubles import ConsulDouble, NomadDouble
from support import DEADLINE, start_yurt, wait_until

CONFIG = """
[consul]
router_check_interval = 1.0
"""


class Silent:
    """A listener on 127.0.0.1 that closes every connection unanswered, and counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def doubles(tmp_path: Path) -> AsyncIterator[tuple[ConsulDouble, NomadDouble]]:
    consul = ConsulDouble()
    await consul.start()
    nomad = NomadDouble(consul, tmp_path / "nomad", poll=0.2)
    await nomad.start()
    try:
        yield consul, nomad
    finally:
        await nomad.stop()
        await consul.stop()


async def test_router_check_targets_the_instance(
    tmp_path: Path, doubles: tuple[ConsulDouble, NomadDouble]
) -> None:
    """Behind a public URL, the router's service and check name its own address and port."""
    consul, nomad = doubles
    balancer = Silent()
    lb_port = await balancer.start()
    config = tmp_path / "yurt.toml"
    config.write_text(CONFIG)
    args = ["server", "--backend", "nomad", "--host", "127.0.0.1", "--port", "0"]
    args += ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
    args += ["--nomad-addr", nomad.url, "--consul-addr", consul.url]
    args += ["--public-url", f"http://127.0.0.1:{lb_port}"]
    log = tmp_path / "server.out"
    proc, base = await start_yurt(args, log, r"server at (http://\S+)")
    try:
        port = urlsplit(base).port
        assert port is not None and port != lb_port

        def passing() -> list[dict[str, Any]]:
            return consul.entries("yurt-router", passing=True)

        (entry,) = await wait_until(passing, DEADLINE, "the router's own check to pass")
        assert (entry["Service"]["Address"], entry["Service"]["Port"]) == ("127.0.0.1", port)
        (check,) = [c for c in entry["Checks"] if c["ServiceID"] == entry["Service"]["ID"]]
        assert f"http://127.0.0.1:{port}/_yurt/health" in check["Output"]
        assert balancer.connections == 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0, log.read_text()
        assert consul.entries("yurt-router") == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await balancer.stop()
