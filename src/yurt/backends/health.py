"""HTTP health checks of runners, as the local backend runs them (Consul does on a cluster).

Knows URLs and statuses, nothing of runners: the backend decides what a result means.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import structlog

from yurt.config import HealthConfig

log = structlog.get_logger("yurt.health")


# How long a starting runner may hold a readiness check for its setup() to settle.
READY_WAIT_S = 1.0


class HttpHealthChecker:
    """Probes ``GET /_yurt/health`` with one shared keep-alive session."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def probe(self, url: str, timeout: float) -> int | None:
        """The status ``url`` answers with, or None when it cannot be reached in time."""
        assert self._session is not None, "HttpHealthChecker.start() first"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                await r.read()
                return r.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def wait_ready(self, url: str, deadline: float, on_answer: Callable[[], None]) -> bool:
        """Poll until ``url`` answers 200 (True) or ``deadline`` passes (False).

        ``on_answer`` is called at each non-200 answer: the port is open, setup still runs.
        Each check asks the runner to hold its answer up to ``READY_WAIT_S`` until setup()
        settles (``?wait=``), so a runner is seen ready as it becomes so, not a poll later; a
        runner that does not know the parameter answers at once, and the poll goes on.
        """
        waiting = f"{url}?wait={READY_WAIT_S:g}"
        while time.monotonic() < deadline:
            status = await self.probe(waiting, self.config.timeout + READY_WAIT_S)
            if status == 200:
                return True
            if status is not None:
                on_answer()
            await asyncio.sleep(self.config.startup_poll)
        return False

    async def until_unhealthy(
        self, url: str, *, threshold: int, timeout: float, grace_until: float, what: dict[str, str]
    ) -> None:
        """Return once ``threshold`` checks in a row failed (none count before grace_until)."""
        failures = 0
        while True:
            await asyncio.sleep(self.config.interval)
            status = await self.probe(url, timeout)
            if status == 200 or time.monotonic() < grace_until:
                failures = 0
                continue
            failures += 1
            log.warning(
                "health_check_failed", status=status, failures=failures, threshold=threshold, **what
            )
            if failures >= threshold:
                return
