"""Apps the integration tests serve. Each one misbehaves in one documented way."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class Outcome(BaseModel):
    status: int = 200
    seconds: float = 0.0


class Echo(yurt.App, keep_alive=300):
    def setup(self) -> None:
        self.prefix = "echo: "

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=self.prefix + body.prompt)


class Rules(yurt.App, keep_alive=300, max_concurrency=1, request_timeout=1.5):
    """Answers with whatever it is told to, crashes, or outlives request_timeout."""

    @yurt.endpoint("/")
    def status(self, body: Outcome) -> Reply:
        if body.status == 200:
            return Reply(text=f"pid {os.getpid()}")
        raise yurt.AppException(f"asked for {body.status}", status_code=body.status)

    @yurt.endpoint("/raw")
    async def raw(self, body: Outcome) -> web.Response:
        return web.json_response({"pid": os.getpid()}, status=body.status)

    @yurt.endpoint("/boom")
    def boom(self) -> Reply:
        raise ValueError("the model exploded")

    @yurt.endpoint("/crash")
    def crash(self) -> Reply:
        os._exit(17)

    @yurt.endpoint("/sleep")
    def sleep(self, body: Outcome) -> Reply:
        time.sleep(body.seconds)
        return Reply(text=f"pid {os.getpid()}")


class FailingSetup(yurt.App, keep_alive=300, startup_timeout=20):
    def setup(self) -> None:
        raise RuntimeError("weights not found at /models/missing.bin")

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=body.prompt)


class SlowSetup(yurt.App, keep_alive=300, startup_timeout=1.0):
    async def setup(self) -> None:
        await asyncio.sleep(60)

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=body.prompt)


class BlockingSetup(yurt.App, keep_alive=300, startup_timeout=1.0):
    """Blocks its own event loop in setup(): only the backend's deadline can stop it."""

    async def setup(self) -> None:
        time.sleep(60)  # noqa: ASYNC251 - the point is to block the runner's loop

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=body.prompt)


class FlakyHealth(yurt.App, keep_alive=300, min_concurrency=1):
    """Its health check fails while the file named by $YURT_TEST_UNHEALTHY exists."""

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")

    @yurt.endpoint(
        "/health",
        health_check=yurt.HealthCheck(
            start_period_seconds=0, timeout_seconds=1, failure_threshold=2
        ),
    )
    def health(self) -> Reply:
        if Path(os.environ["YURT_TEST_UNHEALTHY"]).exists():
            raise RuntimeError("unhealthy on purpose")
        return Reply(text="ok")


class Quick(yurt.App, keep_alive=1.0, max_concurrency=2):
    """Scales to zero one second after its last request."""

    @yurt.endpoint("/")
    async def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")


class Warm(yurt.App, keep_alive=0.2, min_concurrency=1, max_concurrency=2):
    """Keeps one runner warm however idle it is."""

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"pid {os.getpid()}")


class Multiplexed(yurt.App, keep_alive=300, max_multiplexing=3, max_concurrency=1):
    """Counts, inside the runner, how many requests it serves at once."""

    def setup(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    @yurt.endpoint("/")
    def work(self, body: Outcome) -> Reply:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(body.seconds)
        finally:
            with self.lock:
                self.active -= 1
        return Reply(text=str(self.peak))

    @yurt.endpoint("/peak")
    def report(self) -> Reply:
        return Reply(text=str(self.peak))


class Draining(yurt.App, termination_grace_period_seconds=10):
    """Writes a file in teardown() so a test can see it ran after the drain."""

    @yurt.endpoint("/")
    async def slow(self, body: Outcome) -> Reply:
        await asyncio.sleep(body.seconds)
        return Reply(text="finished")

    def teardown(self) -> None:
        Path(os.environ["YURT_TEST_TEARDOWN"]).write_text("torn down")


class Wait(BaseModel):
    seconds: float = 30.0
    gate: str = ""  # a file path: wait until it exists instead


def _gate_open(body: Wait, started: float) -> bool:
    if body.gate:
        return Path(body.gate).exists()
    return time.monotonic() - started >= body.seconds


class Cancellable(yurt.App, keep_alive=300, max_multiplexing=1):
    """Waits until cancelled, and remembers which requests were cancelled and how."""

    def setup(self) -> None:
        self.cancelled: list[str] = []
        self.setup_saw = repr(self.current_request)

    @yurt.endpoint("/")
    async def wait(self, body: Wait) -> Reply:
        request = self.current_request
        assert request is not None
        try:
            await asyncio.sleep(body.seconds)
        except asyncio.CancelledError:
            self.cancelled.append(f"task {request.request_id}")
            raise
        return Reply(text="finished")

    @yurt.endpoint("/sync")
    def poll(self, body: Wait) -> Reply:
        request = self.current_request
        assert request is not None
        started = time.monotonic()
        while not _gate_open(body, started):
            if request.cancelled:
                self.cancelled.append(f"polled {request.request_id}")
                return Reply(text="stopped early")
            time.sleep(0.01)
        return Reply(text="finished")

    @yurt.endpoint("/context")
    async def context(self) -> dict[str, object]:
        request = self.current_request
        assert request is not None
        return {
            "request_id": request.request_id,
            "header": request.headers.get("X-Test-Header"),
            "cancelled": request.cancelled,
            "sync": await asyncio.to_thread(self._sync_context),
        }

    def _sync_context(self) -> str | None:
        request = self.current_request
        return None if request is None else request.request_id

    @yurt.endpoint("/sync-context")
    def sync_context(self) -> dict[str, object]:
        request = self.current_request
        assert request is not None
        return {"request_id": request.request_id, "header": request.headers.get("x-test-header")}

    @yurt.endpoint("/cancelled")
    def report(self) -> dict[str, object]:
        return {"cancelled": self.cancelled, "setup_saw": self.setup_saw}


class Chatty(yurt.App, keep_alive=300, max_multiplexing=3):
    """Prints and logs while it serves, so that tests can read each request's output."""

    def setup(self) -> None:
        self.together = threading.Barrier(3, timeout=30)
        print("setup output is not a request's")

    @yurt.endpoint("/")
    def talk(self, body: Prompt) -> Reply:
        print(f"stdout {body.prompt}")
        print(f"stderr {body.prompt}", file=sys.stderr)
        print("partial ", end="")
        print(f"line {body.prompt}", end="")
        logging.getLogger("chatty").info("info %s", body.prompt)
        logging.getLogger("chatty").debug("debug %s", body.prompt)
        logging.warning("warning %s", body.prompt)
        return Reply(text=body.prompt)

    @yurt.endpoint("/together")
    def meet(self, body: Prompt) -> Reply:
        print(f"before {body.prompt}")
        self.together.wait()
        print(f"after {body.prompt}")
        return Reply(text=body.prompt)

    @yurt.endpoint("/slow")
    async def slow(self, body: Wait) -> Reply:
        print("first")
        started = time.monotonic()
        # A file the test creates is the only signal that crosses into this process.
        while not _gate_open(body, started):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        print("last")
        return Reply(text="finished")


class Hinted(yurt.App, keep_alive=300):
    """Says which requests it served in its runner hints; one endpoint asks for a retry."""

    def setup(self) -> None:
        self.served = 0

    def provide_hints(self) -> list[str]:
        return ["model-a", f"served-{self.served}", "bad,hint"]

    @yurt.endpoint("/")
    def serve(self, body: Prompt) -> Reply:
        self.served += 1
        return Reply(text=body.prompt)

    @yurt.endpoint("/refuse")
    def refuse(self) -> Reply:
        raise yurt.AppException("busy elsewhere", 503, headers={"X-Fal-Needs-Retry": "1"})


class Spawner(yurt.App, keep_alive=300):
    """Starts a long-lived child process in setup() (as a model server would) and notes its pid
    in the file $YURT_TEST_CHILD_PID."""

    def setup(self) -> None:
        import subprocess

        child = subprocess.Popen(["sleep", "1000"])
        with open(os.environ["YURT_TEST_CHILD_PID"], "w") as f:
            f.write(str(child.pid))

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=body.prompt)


class Gated(yurt.App, keep_alive=300, max_concurrency=1):
    """One request at a time, each held until its gate file exists."""

    @yurt.endpoint("/")
    def hold(self, body: Wait) -> Reply:
        started = time.monotonic()
        while not _gate_open(body, started):
            time.sleep(0.02)
        return Reply(text="done")


class _CutShort(web.Response):
    """A reply whose head promises a longer body than the runner sends before it dies."""

    async def write_eof(self, data: bytes = b"") -> None:
        await self.write(b"0123456789")
        await self.drain()
        os._exit(17)


class Kept(yurt.App, keep_alive=300, max_concurrency=1, request_timeout=5):
    """Answers at once or after a pause, or dies half-way through a reply."""

    @yurt.endpoint("/")
    async def answer(self, body: Outcome) -> Reply:
        await asyncio.sleep(body.seconds)
        return Reply(text=f"pid {os.getpid()}")

    @yurt.endpoint("/cut")
    async def cut(self) -> web.Response:
        return _CutShort(body=b"x" * 100, content_type="application/json")
