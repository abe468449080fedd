"""Per-input round trip of a ``@yurt.realtime`` endpoint against a POST of the same input.

Starts a platform in this process with one runner of ``RealtimeEcho`` (below), then, against
that runner directly (with its token, as the router calls it), times in alternating rounds:

- ``post``: one ``POST /`` of ``{"prompt": ...}`` on a kept-alive connection, reply read;
- ``realtime``: one msgpack frame sent and its output read, on one open websocket.

Prints the median and p90 per round trip (ms) of each and the ratio realtime/post, all from the
same run on the same machine::

    python bench/realtime_roundtrip.py [--rounds 5] [--per-round 400]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

import yurt

HERE = Path(__file__).resolve()


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class RealtimeEcho(yurt.App, min_concurrency=1, keep_alive=300):
    """The same echo over a POST endpoint and a realtime one."""

    @yurt.endpoint("/")
    def post(self, body: Prompt) -> Reply:
        return Reply(text=body.prompt)

    @yurt.realtime("/realtime")
    def live(self, body: Prompt) -> Reply:
        return Reply(text=body.prompt)


async def time_post(url: str, headers: dict[str, str], n: int) -> list[float]:
    import aiohttp

    out: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(n):
            t0 = time.perf_counter()
            async with session.post(url, json={"prompt": f"p{i}"}) as resp:
                await resp.read()
            out.append(time.perf_counter() - t0)
    return out


async def time_realtime(url: str, headers: dict[str, str], n: int) -> list[float]:
    from yurt.client.realtime import AsyncRealtimeConnection

    out: list[float] = []
    async with await AsyncRealtimeConnection.open(url, headers, timeout=30, ssl_context=None) as rt:
        for i in range(n):
            t0 = time.perf_counter()
            await rt.send({"prompt": f"p{i}"})
            await rt.recv()
            out.append(time.perf_counter() - t0)
    return out


async def bench(args: argparse.Namespace) -> None:
    from yurt.config import RouterConfig, ServerConfig
    from yurt.loader import load_app
    from yurt.platform import Platform

    cls = load_app(f"{HERE}::RealtimeEcho")
    with tempfile.TemporaryDirectory(prefix="yurt-bench-") as tmp:
        platform = Platform(ServerConfig(data_dir=Path(tmp), router=RouterConfig(port=0)))
        await platform.start()
        try:
            app_id = await platform.add_app(cls)
            deadline = time.monotonic() + 60
            while not (healthy := platform.registry.healthy(app_id)):
                if time.monotonic() > deadline:
                    raise SystemExit("no healthy runner within 60 s")
                await asyncio.sleep(0.05)
            runner = healthy[0]
            headers = {"x-yurt-runner-token": runner.token}
            base = f"{runner.host}:{runner.port}"
            post: list[float] = []
            live: list[float] = []
            await time_post(f"http://{base}/", headers, 50)  # warm both paths up
            await time_realtime(f"ws://{base}/realtime", headers, 50)
            for _ in range(args.rounds):
                post += await time_post(f"http://{base}/", headers, args.per_round)
                live += await time_realtime(f"ws://{base}/realtime", headers, args.per_round)
        finally:
            await platform.stop(grace=1.0)
    report(post, live)


def report(post: list[float], live: list[float]) -> None:
    def row(name: str, xs: list[float]) -> str:
        p90 = statistics.quantiles(xs, n=10)[-1]
        return f"{name:<10}{1000 * statistics.median(xs):>9.3f}{1000 * p90:>9.3f}{len(xs):>8}"

    print(f"{'':<10}{'median':>9}{'p90':>9}{'n':>8}   (ms per round trip, runner direct)")
    print(row("post", post))
    print(row("realtime", live))
    print(f"realtime / post (median): {statistics.median(live) / statistics.median(post):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=400)
    args = p.parse_args()
    from yurt.logging import configure

    configure("warning")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
