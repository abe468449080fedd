"""Queue throughput: submit -> result round trips per second, against sync runs of the same app.

Serves ``bench/apps.py::Noop`` (async endpoint, max_multiplexing=64, one warm runner) in its own
process, ``bench/_serve.py``, the way ``router_overhead.py`` does, and runs N concurrent client
loops through the router, in alternating rounds (sync, queue, stream, sync, queue, ...):

- a sync round trip is one ``POST /{owner}/{app}``;
- a queue round trip is ``POST /queue/{owner}/{app}``, then ``GET {response_url}`` with
  ``Prefer: wait=60``, which the router answers once the request completes: what
  ``yurt.Client``'s ``submit(...).result()`` does;
- a stream round trip is ``POST /queue/{owner}/{app}``, then ``GET {status_url}/stream`` read
  until its COMPLETED event (the stream ends there), then ``GET {response_url}``: the fewest
  requests fal's own protocol needs to learn of completion (fal-client polls the status instead).

The figures are medians over rounds; queue/sync and stream/sync are medians of per-round ratios
(each queue and stream round is paired with the sync round that opened its set).
The client is aiohttp by default; ``--client pool`` uses yurt's own ``ConnectionPool`` (raw
HTTP/1.1 on httptools, as ``router_overhead.py`` does), which costs the shared cores far less.

    .venv/bin/python bench/queue_throughput.py [--rounds 5] [--seconds 3] [--warmup 1]
        [--concurrency 32 8] [--client aiohttp|pool] [--loop auto|asyncio|uvloop]
        [--client-loop auto|asyncio|uvloop] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as pyplatform
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
from router_overhead import (
    BODY,
    HEADERS,
    Round,
    Server,
    has_uvloop,
    mark,
    print_profile,
    proc_cpu_s,
    target_stats,
)

from yurt.aio import LOOP_NAMES, run
from yurt.router.pool import ConnectionPool

TARGET_RATIO = 0.5  # queue round trips / sync round trips, at the highest concurrency
TARGET_QUEUE_RPS = 300.0
JSON_HEADER = {"content-type": "application/json"}

KINDS = ("sync", "queue", "stream")
QUEUED = ("queue", "stream")
HELD = {"prefer": "wait=60"}

Trip = Callable[[], Awaitable[bool]]


# -- clients ---------------------------------------------------------------------------------


class Client(Protocol):
    """Makes the three kinds of round trip; each returns whether it got the expected answer."""

    async def sync(self) -> bool: ...
    async def queue(self) -> bool: ...
    async def stream(self) -> bool: ...
    async def close(self) -> None: ...


class AiohttpClient:
    """aiohttp, as a Python caller of the queue would use it; a session per kind of trip.

    Each kind of trip gets its own session, so that the two kinds never wait behind each other
    for a connection.
    """

    def __init__(self, router: str, app_id: str, expected: bytes, conc: int) -> None:
        self.sync_url = f"{router}/{app_id}"
        self.queue_url = f"{router}/queue/{app_id}"
        self.expected = expected
        self.sessions = {
            k: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) for k in KINDS
        }

    async def sync(self) -> bool:
        session = self.sessions["sync"]
        async with session.post(self.sync_url, data=BODY, headers=JSON_HEADER) as resp:
            body = await resp.read()
            return resp.status == 200 and body == self.expected

    async def _submit(self, session: aiohttp.ClientSession) -> dict[str, str] | None:
        async with session.post(self.queue_url, data=BODY, headers=JSON_HEADER) as resp:
            if resp.status != 200:
                await resp.read()
                return None
            submitted: dict[str, str] = await resp.json()
            return submitted

    async def queue(self) -> bool:
        session = self.sessions["queue"]
        submitted = await self._submit(session)
        if submitted is None:
            return False
        async with session.get(submitted["response_url"], headers=HELD) as resp:
            body = await resp.read()
            return resp.status == 200 and body == self.expected

    async def stream(self) -> bool:
        session = self.sessions["stream"]
        submitted = await self._submit(session)
        if submitted is None:
            return False
        completed = False
        async with session.get(submitted["status_url"] + "/stream") as resp:
            # Read to the end: the server ends the stream right after the COMPLETED event, and a
            # response read to its end leaves its connection reusable.
            async for line in resp.content:
                if line.startswith(b"data: "):
                    completed = json.loads(line[6:])["status"] == "COMPLETED"
        if not completed:
            return False
        async with session.get(submitted["response_url"]) as resp:
            body = await resp.read()
            return resp.status == 200 and body == self.expected

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


class PoolClient:
    """yurt's ``ConnectionPool``: whole responses on httptools, a pool per kind of trip."""

    def __init__(self, router: str, app_id: str, expected: bytes, conc: int) -> None:
        self.origin = router
        host, port = router.removeprefix("http://").rsplit(":", 1)
        self.pools = {k: ConnectionPool(host, int(port), max_idle=conc) for k in KINDS}
        self.sync_path = f"/{app_id}".encode()
        self.queue_path = f"/queue/{app_id}".encode()
        self.expected = expected

    def _path(self, url: str) -> bytes:
        return url.removeprefix(self.origin).encode()

    async def sync(self) -> bool:
        reply = await self.pools["sync"].request(b"POST", self.sync_path, HEADERS, BODY, 30.0)
        return reply.status == 200 and reply.body == self.expected

    async def _submit(self, pool: ConnectionPool) -> dict[str, str] | None:
        reply = await pool.request(b"POST", self.queue_path, HEADERS, BODY, 30.0)
        return json.loads(reply.body) if reply.status == 200 else None  # type: ignore[no-any-return]

    async def queue(self) -> bool:
        pool = self.pools["queue"]
        submitted = await self._submit(pool)
        if submitted is None:
            return False
        result = self._path(submitted["response_url"])
        reply = await pool.request(b"GET", result, [(b"prefer", b"wait=60")], b"", 30.0)
        return reply.status == 200 and reply.body == self.expected

    async def stream(self) -> bool:
        pool = self.pools["stream"]
        submitted = await self._submit(pool)
        if submitted is None:
            return False
        # The stream ends after its COMPLETED event, so the whole response is the whole stream.
        stream = self._path(submitted["status_url"]) + b"/stream"
        reply = await pool.request(b"GET", stream, [], b"", 30.0)
        events = [e for e in reply.body.split(b"\n\n") if e.startswith(b"data: ")]
        if not events or json.loads(events[-1][6:])["status"] != "COMPLETED":
            return False
        reply = await pool.request(b"GET", self._path(submitted["response_url"]), [], b"", 30.0)
        return reply.status == 200 and reply.body == self.expected

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()


CLIENTS: dict[str, Callable[[str, str, bytes, int], Client]] = {
    "aiohttp": AiohttpClient,
    "pool": PoolClient,
}


# -- rounds ----------------------------------------------------------------------------------


async def load(trip: Trip, seconds: float, conc: int) -> Round:
    """``conc`` client loops, each making round trips one after another for ``seconds``.

    Rounds last a fixed time rather than a fixed count, so a pathologically slow path (a status
    stream that stalls) still gives a figure in bounded time. Trips in flight at the deadline
    finish and count; the wall time runs until the last one is done.
    """
    lat: list[float] = []
    errors = 0
    perf = time.perf_counter
    t0 = perf()
    stop_at = t0 + seconds

    async def loop() -> None:
        nonlocal errors
        while perf() < stop_at:
            t = perf()
            ok = await trip()
            lat.append(perf() - t)
            errors += not ok

    async with asyncio.timeout(seconds + 120.0):
        await asyncio.gather(*(loop() for _ in range(conc)))
    return Round("", conc, len(lat), perf() - t0, lat, errors, {})


async def measure(
    target: str, trip: Trip, seconds: float, conc: int, pids: dict[str, int]
) -> Round:
    before = {k: proc_cpu_s(p) for k, p in pids.items()}
    client0 = time.process_time()
    r = await load(trip, seconds, conc)
    r.cpu = {k: proc_cpu_s(p) - before[k] for k, p in pids.items()}
    r.cpu["client"] = time.process_time() - client0
    r.target = target
    return r


# -- report ----------------------------------------------------------------------------------


def summarize(rounds: list[Round], conc: int) -> dict[str, float]:
    by = {t: [r for r in rounds if r.conc == conc and r.target == t] for t in KINDS}
    med = statistics.median
    out: dict[str, float] = {}
    for t, rs in by.items():
        out.update(target_stats(t, rs, ("router", "runner", "client")))
    for t in QUEUED:
        pairs = list(zip(by["sync"], by[t], strict=True))
        out[f"{t}_ratio"] = med(q.rps / s.rps for s, q in pairs)
    return out


def print_table(s: dict[str, float], conc: int, seconds: float, rounds: int) -> None:
    print(f"\n{conc} client loops, {seconds:g} s per round, {rounds} rounds (medians):")
    print(
        f"  {'target':<6} {'trips/s':>8} {'(min..max)':>15} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}  CPU us/trip: {'router':>6} {'runner':>6} {'client':>6}"
    )
    for t in KINDS:
        spread = f"({s[f'{t}_rps_min']:.0f}..{s[f'{t}_rps_max']:.0f})"
        print(
            f"  {t:<6} {s[f'{t}_rps']:>8.0f} {spread:>15} {s[f'{t}_p50']:>8.2f} "
            f"{s[f'{t}_p99']:>8.2f} {s[f'{t}_errors']:>6.0f}               "
            f"{s[f'{t}_cpu_router_us']:>6.0f} {s[f'{t}_cpu_runner_us']:>6.0f} "
            f"{s[f'{t}_cpu_client_us']:>6.0f}"
        )
    for t in QUEUED:
        print(f"  {t}/sync round trips {s[f'{t}_ratio']:.3f}x   (median of per-round pairs)")


def print_config(args: argparse.Namespace, info: dict[str, object]) -> None:
    loop = asyncio.get_running_loop()
    print("yurt queue throughput benchmark")
    print(f"  python {pyplatform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs")
    print(
        f"  app {info['app_id']} (bench/apps.py::Noop, max_multiplexing=64, one runner, loop "
        f"{'uvloop' if has_uvloop(int(info['runner_pid'])) else 'asyncio'}, pid "  # type: ignore[call-overload]
        f"{info['runner_pid']})"
    )
    print(
        f"  router: own process pid {info['pid']}, {info['router']}, event loop {info['loop']} "
        f"(--loop {args.loop}); queue store SQLite WAL, synchronous=NORMAL, in a temp dir"
    )
    print(
        f"  client: this process, --client {args.client} (a connection pool per kind of trip, "
        f"as many connections as client loops), loop {type(loop).__module__}."
        f"{type(loop).__name__}; body {len(BODY)} bytes"
    )
    print(
        "  sync trip = 1 POST; queue trip = submit + GET result held until completed "
        "(Prefer: wait, as yurt.Client does: 2 requests); stream trip = submit + status stream "
        "to COMPLETED + GET result (3 requests); client, router and runner share the cores",
        flush=True,
    )


def reproduce_cmd() -> str:
    return ".venv/bin/python " + shlex.join(["bench/queue_throughput.py", *sys.argv[1:]])


async def rounds_at(
    args: argparse.Namespace, target: tuple[str, str, bytes], conc: int, pids: dict[str, int]
) -> list[Round]:
    """Alternating sync and queue rounds at ``conc`` client loops, on a fresh client."""
    client = CLIENTS[args.client](*target, conc)
    kinds: dict[str, Trip] = {"sync": client.sync, "queue": client.queue, "stream": client.stream}
    rounds: list[Round] = []
    try:
        for trip in kinds.values():  # warm-up: connections, code paths, allocators
            await load(trip, args.warmup, conc)
        for i in range(args.rounds):
            for kind, trip in kinds.items():
                # Profile queue rounds only: router_overhead.py profiles the sync path.
                profiled = args.profile and kind == "queue"
                if profiled:
                    os.kill(pids["router"], signal.SIGUSR1)
                r = await measure(kind, trip, args.seconds, conc, pids)
                if profiled:
                    os.kill(pids["router"], signal.SIGUSR2)
                rounds.append(r)
                if args.verbose:
                    print(
                        f"  round {i + 1} c={conc} {kind}: {r.n} trips, {r.rps:.0f}/s "
                        f"p50 {r.pct(0.5):.2f} ms p99 {r.pct(0.99):.2f} ms errors {r.errors}",
                        flush=True,
                    )
    finally:
        await client.close()
    return rounds


async def first_reply(url: str) -> bytes:
    """The sync reply every round trip must return (the runner's encoding of ``BODY``)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=BODY, headers=JSON_HEADER) as resp,
    ):
        reply = await resp.read()
    if resp.status != 200 or json.loads(reply) != json.loads(BODY):
        raise RuntimeError(f"unexpected reply {resp.status} {reply[:200]!r}")
    return reply


# -- main ------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    server = Server(args.loop, args.profile)
    try:
        info = server.wait_ready()
        pids = {"router": int(info["pid"]), "runner": int(info["runner_pid"])}  # type: ignore[call-overload]
        print_config(args, info)
        router, app_id = str(info["router"]), str(info["app_id"])
        expected = await first_reply(f"{router}/{app_id}")

        rounds: list[Round] = []
        t_start = time.monotonic()
        for conc in args.concurrency:
            rounds += await rounds_at(args, (router, app_id, expected), conc, pids)
        measured_s = time.monotonic() - t_start

        summaries = {conc: summarize(rounds, conc) for conc in args.concurrency}
        for conc, s in summaries.items():
            print_table(s, conc, args.seconds, args.rounds)
        print(f"\nrounds (warm-ups included) took {measured_s:.1f} s")
        top = max(args.concurrency)
        s = summaries[top]
        print(f"\ntargets (at {top} client loops):")
        print(
            f"  queue >= {TARGET_RATIO}x sync round trips: {s['queue_ratio']:.3f}x  "
            f"{mark(s['queue_ratio'] >= TARGET_RATIO)}   (stream: {s['stream_ratio']:.3f}x)"
        )
        print(
            f"  queue >= {TARGET_QUEUE_RPS:.0f} round trips/s: {s['queue_rps']:.0f}  "
            f"{mark(s['queue_rps'] >= TARGET_QUEUE_RPS)}"
        )
        errors = sum(r.errors for r in rounds)
        if errors:
            print(f"\nWARNING: {errors} failed round trips during measurement")
        if args.profile:
            print("\nNOTE: --profile slows the router; the figures above are not representative.")
    finally:
        server.stop()
    if args.profile:
        print_profile(args.profile)
    print(f"\nreproduce: {reproduce_cmd()}")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per concurrency")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each round")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of each kind, unmeasured")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[32, 8], help="client loops, in turn"
    )
    p.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="aiohttp",
        help="aiohttp, or yurt's ConnectionPool (cheaper: leaves more of the cores to the router)",
    )
    p.add_argument(
        "--loop",
        choices=LOOP_NAMES,
        default="auto",
        help="event loop of the router and runner, as yurt run --loop (auto: uvloop if installed)",
    )
    p.add_argument(
        "--client-loop",
        choices=LOOP_NAMES,
        default="auto",
        help="event loop of the client (auto: uvloop if installed, to keep the client cheap)",
    )
    p.add_argument(
        "--profile", default="", help="cProfile the router during the queue rounds to FILE"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every round")
    args = p.parse_args()
    sys.exit(run(bench(args), args.client_loop))


if __name__ == "__main__":
    main()
