"""Tests for one attempt of a queued request on a runner: one path, one outcome, or none."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web

from yurt.backends.base import RunnerEndpoint
from yurt.queue.attempt import Attempt, InFlight
from yurt.queue.decide import Outcome
from yurt.queue.model import Job, Routing
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.rules import queue_error, queue_status


class Runner:
    """A runner's HTTP surface: endpoints by path, and the logs route of the queue."""

    def __init__(self) -> None:
        self.hold = asyncio.Event()
        self.port = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/_yurt/requests/"):
            assert request.query.get("forget") == "1"
            return web.json_response([{"message": "printed"}])
        if request.path == "/busy":
            return web.json_response({"detail": "full"}, status=503)
        if request.path == "/logged":
            return web.json_response({}, headers={"x-yurt-log-count": "1"})
        if request.path == "/hinted":
            return web.json_response({}, headers={"x-yurt-runner-hints": "a,b"})
        if request.path == "/held":
            await self.hold.wait()
        body = await request.read()
        return web.json_response({"echo": body.decode(), "id": request.headers["x-fal-request-id"]})


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    up = Runner()
    server = web.ServerRunner(web.Server(up.handle))
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    up.port = server.addresses[0][1]
    yield up
    up.hold.set()
    await server.cleanup()


class Route:
    """What an attempt uses of its route: the app's request timeout and the slot's release."""

    def __init__(self) -> None:
        self.spec = types.SimpleNamespace(request_timeout=30.0)
        self.released: list[Slot] = []

    def release(self, slot: Slot) -> None:
        self.released.append(slot)


class Harness:
    def __init__(self, port: int) -> None:
        self.slot = Slot(RunnerEndpoint("r1", "127.0.0.1", port), 0.0)
        self.route = Route()
        self.in_flight = InFlight()
        self.outcomes: asyncio.Queue[tuple[Outcome, list[dict[str, Any]]]] = asyncio.Queue()

    def done(self, attempt: Attempt, outcome: Outcome, logs: list[dict[str, Any]]) -> None:
        assert attempt.slot is self.slot
        self.outcomes.put_nowait((outcome, logs))

    def run(self, endpoint: str, body: bytes = b"hi") -> Attempt:
        job = Job("req-1", "o/a", endpoint, "", [], body, Routing(), 0.0)
        attempt = Attempt(
            job,
            cast(AppRoute, self.route),
            self.slot,
            done=self.done,
            in_flight=self.in_flight,
            loop=asyncio.get_running_loop(),
        )
        attempt.run()
        return attempt

    async def outcome(self) -> tuple[Outcome, list[dict[str, Any]]]:
        return await asyncio.wait_for(self.outcomes.get(), 30)


async def test_a_new_connection_and_an_idle_one_give_the_same_outcome(runner: Runner) -> None:
    """The first attempt connects first, the next finds the connection idle: both hand on one
    outcome each, the runner's answer with the request id, and leave nothing in flight."""
    h = Harness(runner.port)
    try:
        seen = []
        for body in (b"first", b"second"):
            h.run("/", body)
            outcome, logs = await h.outcome()
            assert outcome.verdict == queue_status(200) and logs == []
            seen.append(json.loads(outcome.result.body))
            assert not h.in_flight
        assert seen == [{"echo": "first", "id": "req-1"}, {"echo": "second", "id": "req-1"}]
        assert h.outcomes.empty() and h.route.released == []
    finally:
        await h.slot.pool.close()


async def test_a_failing_runner_is_judged_by_the_rules_table(runner: Runner) -> None:
    """A 503 is judged as the table says (terminate, retry), its error kept as the result."""
    h = Harness(runner.port)
    try:
        h.run("/busy")
        outcome, _ = await h.outcome()
        assert outcome.verdict == queue_status(503)
        assert outcome.result.status == 503 and outcome.result.error == "full"
    finally:
        await h.slot.pool.close()


async def test_an_unreachable_runner_is_a_refused_connection() -> None:
    """No runner listening: the outcome is the table's refused connection, answered 503."""
    h = Harness(1)  # nothing listens on port 1
    try:
        h.run("/")
        outcome, _ = await h.outcome()
        assert outcome.verdict == queue_error("connect_refused")
        assert outcome.result.status == 503
    finally:
        await h.slot.pool.close()


async def test_the_runners_logs_and_hints_come_with_the_outcome(runner: Runner) -> None:
    """An answer saying it has logs hands them on with its outcome; one with hints leaves
    them on the slot."""
    h = Harness(runner.port)
    try:
        h.run("/logged")
        _, logs = await h.outcome()
        assert logs == [{"message": "printed"}]
        h.run("/hinted")
        await h.outcome()
        assert h.slot.hints == frozenset({"a", "b"})
    finally:
        await h.slot.pool.close()


async def test_a_stop_releases_the_slot_and_hands_nothing_on(runner: Runner) -> None:
    """An attempt still running when the stop's grace ends is cancelled: its slot is released,
    and no outcome is handed on (the store still says in progress)."""
    h = Harness(runner.port)
    try:
        h.run("/held")
        assert h.in_flight
        await h.in_flight.drain(0.0)
        assert h.route.released == [h.slot] and h.outcomes.empty() and not h.in_flight
    finally:
        await h.slot.pool.close()
