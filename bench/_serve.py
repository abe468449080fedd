"""Serve bench/apps.py::Noop on a Platform in this process (the router's own process).

Prints one JSON line on stdout once one runner is healthy, then serves until SIGTERM/SIGINT (or
until its parent is gone) and stops the platform. Used by ``bench/router_overhead.py``.

    python bench/_serve.py [--loop auto|asyncio|uvloop] [--profile OUT.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from yurt.aio import LOOP_NAMES
from yurt.config import LocalBackendConfig, RouterConfig, ServerConfig, local_env

HERE = Path(__file__).resolve().parent


def server_config(data_dir: Path, loop: str, environ: dict[str, str] | None = None) -> ServerConfig:
    """The served platform's config: a router on a free port, the event loop asked for, and,
    as ``yurt run`` and ``yurt server`` start from, ``$CUDA_VISIBLE_DEVICES`` as the GPUs the
    local backend may hand out (``yurt.config.local_env``)."""
    return ServerConfig(
        data_dir=data_dir,
        event_loop=loop,
        router=RouterConfig(port=0),
        local=LocalBackendConfig(runner_loop=loop, **local_env(environ)),
    )


async def serve(args: argparse.Namespace) -> None:
    from yurt import heap
    from yurt.loader import load_app
    from yurt.platform import Platform

    cls = load_app(str(HERE / "apps.py::Noop"))
    parent = os.getppid()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
        loop.add_signal_handler(signal.SIGUSR2, profiler.disable)
    with tempfile.TemporaryDirectory(prefix="yurt-bench-") as tmp:
        key = None
        if args.keys:
            from yurt.keys import KeyStore

            key = KeyStore(Path(tmp)).create("API", "bench", time.time())[1]
        platform = Platform(server_config(Path(tmp), args.loop))
        await platform.start()
        try:
            app_id = await platform.add_app(cls)
            deadline = time.monotonic() + 60
            while not (healthy := platform.registry.healthy(app_id)):
                if time.monotonic() > deadline:
                    raise SystemExit("no healthy runner within 60 s")
                await asyncio.sleep(0.02)
            runner = healthy[0]
            heap.settle()  # as `yurt run` does once it serves
            views = [v for v in platform.backend.runners(app_id) if v.runner_id == runner.runner_id]
            info = {
                "router": platform.url,
                "app_id": app_id,
                "runner": f"{runner.host}:{runner.port}",
                # A runner answers only who shows it (runner/token.py); older trees had no token.
                "token": getattr(runner, "token", None),
                "runner_pid": views[0].pid if views else None,
                "key": key,
                "pid": os.getpid(),
                "loop": f"{type(loop).__module__}.{type(loop).__name__}",
            }
            print(json.dumps(info), flush=True)
            while not stop.is_set():
                if os.getppid() != parent:  # the benchmark died: do not outlive it
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            await platform.stop(grace=1.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loop", choices=LOOP_NAMES, default="auto")
    p.add_argument("--profile", default="", help="cProfile between SIGUSR1 and SIGUSR2 to FILE")
    p.add_argument("--keys", action="store_true", help="make an API key; the app is private")
    args = p.parse_args()
    from yurt.logging import configure

    configure("warning")  # logs to stderr; stdout carries only the JSON line
    from yurt.aio import run

    run(serve(args), args.loop)  # as ``yurt run --loop`` does
    sys.stdout.flush()


if __name__ == "__main__":
    main()
