"""The in-process registry that the local backend fills and the router watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from yurt.backends.base import RunnerEndpoint


class LocalRegistry:
    """Healthy runners per app, with change notification (a ``Discovery``)."""

    def __init__(self) -> None:
        self._healthy: dict[str, dict[str, RunnerEndpoint]] = {}
        self._changed: dict[str, asyncio.Event] = {}

    def set_healthy(self, app_id: str, endpoint: RunnerEndpoint) -> None:
        """Mark a runner healthy."""
        runners = self._healthy.setdefault(app_id, {})
        if runners.get(endpoint.runner_id) != endpoint:
            runners[endpoint.runner_id] = endpoint
            self._notify(app_id)

    def remove(self, app_id: str, runner_id: str) -> None:
        """Mark a runner gone or unhealthy."""
        if self._healthy.get(app_id, {}).pop(runner_id, None) is not None:
            self._notify(app_id)

    def healthy(self, app_id: str) -> list[RunnerEndpoint]:
        """The healthy runners of an app, now."""
        return list(self._healthy.get(app_id, {}).values())

    async def watch(self, app_id: str) -> AsyncIterator[list[RunnerEndpoint]]:
        """Yield the healthy set at once and then each time it changes."""
        while True:
            event = self._changed.setdefault(app_id, asyncio.Event())
            yield self.healthy(app_id)
            await event.wait()

    def _notify(self, app_id: str) -> None:
        # Each change wakes the current watchers once; a new event catches the next change.
        event = self._changed.pop(app_id, None)
        if event is not None:
            event.set()
