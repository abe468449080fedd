"""The fast lane's clock: one sweep over every client connection, instead of a timer re-armed
on every request. A request arriving too slowly (its head past ``header_timeout``, its body
past ``body_timeout``) gets 408; a connection idle past ``keepalive_timeout`` closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set

import structlog

from yurt.config import RouterConfig
from yurt.router.fastlane import FrontProtocol

log = structlog.get_logger("yurt.router")


async def sweep_idle(config: RouterConfig, connections: Set[FrontProtocol]) -> None:
    """Sweep ``connections`` (the router's live set) four times per shortest timeout, until
    cancelled."""
    timeout = config.keepalive_timeout
    tick = min(timeout, config.header_timeout, config.body_timeout) / 4
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(max(tick, 0.01))
        now = loop.time()
        cutoff = now - timeout
        for conn in list(connections):
            if (reply := conn.too_slow(now)) is not None:
                log.info("request_too_slow", error_type="request_read_timeout")
                conn.time_out(reply)
                continue
            since = conn.idle_since()
            if since is not None and since <= cutoff:
                conn.expire()
