"""Streams and websockets through the router against the same upstream called directly.

Three processes: this one (the client), an upstream standing in for a runner (an aiohttp server
with a server-sent-events endpoint and a websocket echo), and a router routing one app to it.
Rounds alternate direct, router, direct, router, ...; each figure is the median over rounds of
each round's p50, and "added" is the median of the per-round (paired) differences.

- time to first byte: POST /stream asking for one event, until its first body byte arrives
  (and, for reference, the same event sent as a plain reply with a content-length);
- per-event latency: a stream of events written 2 ms apart, each stamped with the upstream's
  CLOCK_MONOTONIC (one clock for every process on the machine), until the client has it;
- websocket round trip: one message sent and its echo received, on an open session.

    .venv/bin/python bench/streaming.py [--rounds 5] [--requests 300] [--events 50]
        [--messages 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel

import yurt

HERE = Path(__file__).resolve().parent
APP_ID = "bench/stream"
TARGET_ADDED_MS = 0.2


class Body(BaseModel):
    n: int = 1


class StandIn(yurt.App, max_multiplexing=64, request_timeout=600):
    """What the router routes to; the upstream process answers for it."""

    @yurt.endpoint("/stream")
    def stream(self, body: Body) -> Body:
        return body

    @yurt.endpoint("/ws")
    def ws(self, body: Body) -> Body:
        return body


# -- the two servers, each in a process of its own ------------------------------------------


async def upstream(request: web.BaseRequest) -> web.StreamResponse:
    """``POST /stream`` {n, gap_ms}: n events, each stamped; ``GET /ws``: an echo."""
    if request.path == "/ws":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws
    if request.path != "/stream":
        return web.Response(status=404)
    asked = json.loads(await request.read())
    if asked.get("plain"):  # one event, with a content-length: the reply is not streamed
        return web.Response(body=b"data: %.9f\n\n" % time.monotonic())
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for i in range(asked["n"]):
        if i:
            await asyncio.sleep(asked.get("gap_ms", 0) / 1000)
        await response.write(b"data: %.9f\n\n" % time.monotonic())
    await response.write_eof()
    return response


class OneRunner:
    """The backend the router sees: one runner, always up."""

    def runners(self, app_id: str) -> list[Any]:
        from yurt.backends.base import RunnerState, RunnerView

        return [RunnerView("r1", app_id, RunnerState.IDLE, "127.0.0.1", 1, None, 0.0)]

    def target(self, app_id: str) -> int:
        return 1

    def pick_stops(self, app_id: str, idle: Sequence[str]) -> list[str]:
        return []

    def unplaced(self, app_id: str) -> None:
        return None

    def add_failure_listener(self, listener: Any) -> None:
        pass

    def add_keep_listener(self, listener: Any) -> None:
        pass

    async def stop_runner(self, app_id: str, runner_id: str, **kw: Any) -> None:
        pass


async def serve(role: str, upstream_port: int) -> None:
    """Serve ``role`` until SIGTERM, printing one JSON line once ready."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if role == "upstream":
        runner = web.ServerRunner(web.Server(upstream))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(json.dumps({"port": runner.addresses[0][1], "pid": os.getpid()}), flush=True)
        await stop.wait()
        await runner.cleanup()
        return
    from yurt.backends.base import RunnerEndpoint
    from yurt.config import RouterConfig, SchedulerConfig
    from yurt.discovery.local import LocalRegistry
    from yurt.router.server import Router
    from yurt.scheduler.loop import Scheduler
    from yurt.spec import build_spec

    registry, backend = LocalRegistry(), OneRunner()
    scheduler = Scheduler(backend, SchedulerConfig())  # type: ignore[arg-type]
    router = Router(RouterConfig(port=0), registry, backend, scheduler)  # type: ignore[arg-type]
    await router.start()
    router.add_app(APP_ID, build_spec(StandIn))
    registry.set_healthy(APP_ID, RunnerEndpoint("r1", "127.0.0.1", upstream_port))
    while not router.routes[APP_ID].slots:  # noqa: ASYNC110 - discovery applies it at once
        await asyncio.sleep(0.01)
    print(json.dumps({"url": router.url, "pid": os.getpid()}), flush=True)
    await stop.wait()
    await router.stop(1.0)


class Child:
    """This script in another role, in a session of its own; stopped on exit."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, __file__, "--serve", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True, text=True)

    def ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError("a bench server did not report ready within 60 s")
        info: dict[str, Any] = json.loads(line)
        return info

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


# -- measurements -------------------------------------------------------------------------


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def ttfb(
    session: aiohttp.ClientSession, url: str, requests: int, plain: bool = False
) -> float:
    """p50 ms from sending a one-event stream request (``plain``: the same event as a whole
    reply with a content-length) to its first body byte."""
    took = []
    asked = {"n": 1, "plain": plain}
    for _ in range(requests):
        t0 = time.monotonic()
        async with session.post(url + "/stream", json=asked) as resp:
            await resp.content.readany()
            took.append(time.monotonic() - t0)
            await resp.read()
    return p50(took)


async def per_event(session: aiohttp.ClientSession, url: str, events: int) -> float:
    """p50 ms from the upstream writing an event to the client having it."""
    lags = []
    async with session.post(url + "/stream", json={"n": events, "gap_ms": 2}) as resp:
        buffered = b""
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            buffered += chunk
            *done, buffered = buffered.split(b"\n\n")
            lags += [now - float(event.removeprefix(b"data: ")) for event in done]
    assert len(lags) == events, len(lags)
    return p50(lags)


async def ws_round_trip(session: aiohttp.ClientSession, url: str, messages: int) -> float:
    """p50 ms for one 64-byte message to come back, on an open session."""
    payload = b"x" * 64
    took = []
    async with session.ws_connect(url + "/ws") as ws:
        for _ in range(messages):
            t0 = time.monotonic()
            await ws.send_bytes(payload)
            assert await ws.receive_bytes() == payload
            took.append(time.monotonic() - t0)
    return p50(took)


async def bench(args: argparse.Namespace) -> int:
    up = Child("upstream")
    router: Child | None = None
    try:
        port = up.ready()["port"]
        router = Child("router", "--upstream-port", str(port))
        targets = {"direct": f"http://127.0.0.1:{port}", "router": router.ready()["url"]}
        targets["router"] += "/" + APP_ID
        kinds = {
            "time to first byte": lambda s, u: ttfb(s, u, args.requests),
            "the same, plain reply": lambda s, u: ttfb(s, u, args.requests, plain=True),
            "per-event latency": lambda s, u: per_event(s, u, args.events),
            "websocket round trip": lambda s, u: ws_round_trip(s, u, args.messages),
        }
        results: dict[str, dict[str, list[float]]] = {
            k: {"direct": [], "router": []} for k in kinds
        }
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector) as session:
            for name, measure in kinds.items():
                for url in targets.values():  # warm-up
                    await measure(session, url)
                for _ in range(args.rounds):
                    for target, url in targets.items():
                        results[name][target].append(await measure(session, url))
        print(f"{args.rounds} alternating rounds; p50 per round, then the median over rounds")
        print(f"{'figure':<24} {'direct':>10} {'router':>10} {'added':>10}  target")
        failed = False
        for name, by in results.items():
            added = statistics.median(
                r - d for d, r in zip(by["direct"], by["router"], strict=True)
            )
            ok = added <= TARGET_ADDED_MS
            failed |= not ok
            print(
                f"{name:<24} {statistics.median(by['direct']):>8.3f}ms "
                f"{statistics.median(by['router']):>8.3f}ms {added:>+8.3f}ms  "
                f"<= +{TARGET_ADDED_MS} ms {'PASS' if ok else 'MISS'}"
            )
        print("\nreproduce: " + shlex.join([sys.executable, *sys.argv]))
        return 1 if failed else 0
    finally:
        if router is not None:
            router.stop()
        up.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=300, help="streams per TTFB round")
    p.add_argument("--events", type=int, default=50, help="events per per-event round")
    p.add_argument("--messages", type=int, default=1000, help="messages per websocket round")
    p.add_argument("--serve", choices=("upstream", "router"), help=argparse.SUPPRESS)
    p.add_argument("--upstream-port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        from yurt.aio import run
        from yurt.logging import configure

        configure("warning")  # stdout carries only the JSON line
        run(serve(args.serve, args.upstream_port), "auto")  # uvloop where installed, as yurt runs
        return
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
