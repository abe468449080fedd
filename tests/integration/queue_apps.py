"""Apps the queue tests serve. Each attempt leaves a line in a journal the test reads."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

import yurt


class Attempt(BaseModel):
    """Fail with ``status`` on the first ``fail_times`` attempts (every one if -1), then 200."""

    journal: str  # a file: one line per attempt, "<key> <pid>"
    key: str = "k"
    status: int = 200
    fail_times: int = -1
    seconds: float = 0.0  # how long each failing attempt takes first
    gate: str = ""  # a file to wait for before answering
    needs_retry: str = ""  # X-Fal-Needs-Retry to answer with


def record(body: Attempt) -> int:
    """Append this attempt to the journal; returns how many attempts of ``key`` came before."""
    path = Path(body.journal)
    before = 0
    if path.exists():
        before = sum(1 for line in path.read_text().splitlines() if line.split()[0] == body.key)
    with path.open("a") as f:
        f.write(f"{body.key} {os.getpid()}\n")
    return before


def wait_for_gate(gate: str) -> None:
    deadline = time.monotonic() + 120
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class Retries(yurt.App, keep_alive=300, max_concurrency=1, request_timeout=3.0):
    """Answers as each attempt's body says; the journal shows what ran where."""

    @yurt.endpoint("/")
    def attempt(self, body: Attempt) -> web.Response:
        before = record(body)
        wait_for_gate(body.gate)
        failing = body.fail_times < 0 or before < body.fail_times
        if not failing:
            return web.json_response({"key": body.key, "pid": os.getpid(), "attempt": before + 1})
        if body.status == -1:
            os._exit(17)  # a crash mid-request
        if body.seconds:
            time.sleep(body.seconds)
        headers = {"X-Fal-Needs-Retry": body.needs_retry} if body.needs_retry else {}
        return web.json_response(
            {"detail": f"asked for {body.status}"}, status=body.status, headers=headers
        )


class TwoRunners(Retries, min_concurrency=2, max_concurrency=2):
    """Two warm runners, so that a retry has another runner to go to."""


class NoServerErrorRetries(Retries, skip_retry_conditions=["server_error"]):
    """Opts out of retries after 503 and 504."""


class Cancellable(yurt.App, keep_alive=300, max_concurrency=1):
    """An async endpoint that waits for a gate file; a cancelled one notes it in the journal."""

    @yurt.endpoint("/")
    async def wait(self, body: Attempt) -> web.Response:
        record(body)
        try:
            # A file polled on purpose: the test's signal must cross processes.
            while body.gate and not Path(body.gate).exists():  # noqa: ASYNC110, ASYNC240
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            with Path(body.journal).open("a") as f:  # noqa: ASYNC230
                f.write(f"{body.key}-cancelled {os.getpid()}\n")
            raise
        return web.json_response({"key": body.key})


class Chatty(yurt.App, keep_alive=300):
    """Prints and logs while it serves a request."""

    @yurt.endpoint("/")
    def talk(self, body: Attempt) -> web.Response:
        print(f"printing for {body.key}")
        logging.getLogger("chatty").warning("warning for %s", body.key)
        return web.json_response({"key": body.key}, status=body.status)


class Hinted(Retries, min_concurrency=2, max_concurrency=2):
    """Two warm runners, each hinting its own pid."""

    def provide_hints(self) -> list[str]:
        return [f"pid-{os.getpid()}"]


class Nested(yurt.App, keep_alive=300, max_concurrency=1):
    """Answers with JSON nested too deep for Python's decoder."""

    @yurt.endpoint("/")
    def deep(self, body: Attempt) -> web.Response:
        status = body.status if body.status != 200 else 200
        text = "[" * 5000 + "]" * 5000
        return web.Response(status=status, text=text, content_type="application/json")


class Stubborn(Retries, termination_grace_period_seconds=0.5, request_timeout=60):
    """Ignores cancellation (a sync endpoint that never looks), and stops quickly."""


class NeverReady(yurt.App, keep_alive=300, startup_timeout=20):
    """setup() always fails."""

    def setup(self) -> None:
        raise RuntimeError("weights not found")

    @yurt.endpoint("/")
    def attempt(self, body: Attempt) -> web.Response:
        return web.json_response({})


class Relogged(yurt.App, keep_alive=300, max_concurrency=1, termination_grace_period_seconds=1):
    """Logs each attempt; the first answers 504, the later ones wait for the gate."""

    @yurt.endpoint("/")
    def attempt(self, body: Attempt) -> web.Response:
        before = record(body)
        print(f"attempt {before + 1}")
        if before == 0:
            return web.json_response({"detail": "try again"}, status=504)
        wait_for_gate(body.gate)
        return web.json_response({"attempt": before + 1})
