"""The platform's parts are wired when they are made, and a start that fails stops what started."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from yurt.errors import ConfigError
from yurt.platform import Platform

from support import fast_config

pytestmark = pytest.mark.timeout(120)


def test_building_wires_every_part_and_touches_no_file(tmp_path: Path) -> None:
    """Each part gets its collaborators at construction; nothing is read or written yet."""
    data_dir = tmp_path / "data"
    p = Platform(fast_config(data_dir))
    parts = p.parts
    assert parts.scheduler.source is parts.router
    assert parts.router.wake is parts.wake is parts.scheduler.wake
    assert (parts.router.admin, parts.router.files) == (parts.admin, parts.files)
    assert parts.admin.deployer is p
    assert not data_dir.exists()


async def test_a_failed_start_lets_go_of_the_data_dir(tmp_path: Path) -> None:
    """A start that fails half-way (its port is taken) stops what it started: the data dir's
    lock is released, so the next platform on it starts and serves."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = fast_config(tmp_path)
        router = config.router.model_copy(update={"port": port})
        first = Platform(config.model_copy(update={"router": router}))
        with pytest.raises(ConfigError, match="cannot listen"):
            await first.start()
    async with (
        Platform(fast_config(tmp_path)) as second,
        aiohttp.ClientSession() as http,
        http.get(f"{second.url}/_yurt/health") as resp,
    ):
        assert resp.status == 200
