"""Cold start: time from a request at zero runners to its response (examples/echo.py::Echo).

A Platform runs in this process with a short keep_alive (0.5 s) and scheduler interval (0.05 s).
Each iteration waits until the app has no runner at all, then times one POST through the router
until the response. In the same iteration, as a baseline, it times bare interpreter starts:
``python -c pass`` and ``python -c "import yurt.runner.server"`` (what every runner pays before
it can do anything). Medians over iterations.

    .venv/bin/python bench/cold_start.py [--iterations 7] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from yurt.config import RouterConfig, SchedulerConfig, ServerConfig
from yurt.loader import load_app
from yurt.logging import configure
from yurt.platform import Platform
from yurt.router.pool import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5
KEEP_ALIVE = 0.5
BODY = json.dumps({"prompt": "a yurt on the steppe"}).encode()
HEADERS = [(b"content-type", b"application/json")]
# The same import without interpreter teardown, which a runner only pays when it stops.
IMPORT_NO_TEARDOWN = "import os, yurt.runner.server; os._exit(0)"
LOG_LINE = re.compile(r"^(\S+?Z?)\s+\[\w+\s*\]\s+(runner_listening|runner_ready)\b")


def cold_echo() -> type[Any]:
    """examples/echo.py::Echo with keep_alive=0.5 and no warm runner."""
    echo = load_app(str(ROOT / "examples/echo.py::Echo"))

    class ColdEcho(echo, keep_alive=KEEP_ALIVE, min_concurrency=0):  # type: ignore[valid-type,misc]
        # The payload pickles the class's module by value; keeping Echo's module makes both
        # classes travel by value (this script's own module is not importable on a runner).
        __module__ = echo.__module__

    return ColdEcho


def is_runner(pid: int) -> bool:
    try:
        return b"yurt.runner" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def timed_exec(*argv: str) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(60):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if code != 0:
        raise RuntimeError(f"{argv} exited with {code}")
    return time.perf_counter() - t0


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.005)


def runner_log_times(log_dir: Path, runner_id: str, wall_to_mono: float) -> dict[str, float]:
    """runner_listening / runner_ready from the runner's own log, on the monotonic clock."""
    out: dict[str, float] = {}
    for path in log_dir.glob(f"*{runner_id}.log"):
        for line in path.read_text(errors="replace").splitlines():
            m = LOG_LINE.match(line)
            if m:
                with contextlib.suppress(ValueError):
                    ts = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
                    out.setdefault(m.group(2), ts - wall_to_mono)
    return out


async def bench(args: argparse.Namespace) -> int:
    configure("warning")
    cls = cold_echo()
    rows: list[dict[str, float]] = []
    base_pass: list[float] = []
    base_import: list[float] = []
    base_noexit: list[float] = []
    seen_pids: list[int] = []
    with tempfile.TemporaryDirectory(prefix="yurt-cold-") as tmp:
        config = ServerConfig(
            data_dir=Path(tmp),
            router=RouterConfig(port=0),
            scheduler=SchedulerConfig(interval=0.05),
        )
        platform = Platform(config)
        pool: ConnectionPool | None = None
        try:
            await platform.start()
            app_id = await platform.add_app(cls)
            healthy_at: dict[str, float] = {}
            set_healthy = platform.registry.set_healthy

            def record(app: str, endpoint: Any) -> None:
                healthy_at.setdefault(endpoint.runner_id, time.monotonic())
                set_healthy(app, endpoint)

            platform.registry.set_healthy = record  # type: ignore[method-assign]
            host, port = platform.url.removeprefix("http://").rsplit(":", 1)
            pool = ConnectionPool(host, int(port))
            path = f"/{app_id}".encode()
            print_config(args, cls, app_id)

            for i in range(args.warmup + args.iterations):
                await wait_for(
                    lambda: (
                        not platform.backend.runners(app_id)
                        and not platform.registry.healthy(app_id)
                    ),
                    30,
                    "zero runners",
                )
                # Baseline: bare interpreter starts, in the same conditions (no runner alive).
                t_pass = await timed_exec(sys.executable, "-c", "pass")
                t_import = await timed_exec(sys.executable, "-c", "import yurt.runner.server")
                t_noexit = await timed_exec(sys.executable, "-c", IMPORT_NO_TEARDOWN)
                await asyncio.sleep(0.05)  # let the reaped processes' exit settle

                wall_to_mono = time.time() - time.monotonic()
                t0 = time.monotonic()
                reply = await pool.request(b"POST", path, HEADERS, BODY, 60.0)
                t1 = time.monotonic()
                if reply.status != 200 or b"echo: " not in reply.body:
                    raise RuntimeError(f"unexpected reply {reply.status} {reply.body[:200]!r}")
                views = platform.backend.runners(app_id)
                if len(views) != 1:
                    raise RuntimeError(f"expected one runner, found {views}")
                view = views[0]
                if view.pid:
                    seen_pids.append(view.pid)
                logs = runner_log_times(config.data_dir / "logs", view.runner_id, wall_to_mono)
                row = {
                    "total": t1 - t0,
                    "spawn": view.started_at - t0,
                    "healthy": healthy_at.get(view.runner_id, float("nan")) - t0,
                    "listening": logs.get("runner_listening", float("nan")) - t0,
                    "ready": logs.get("runner_ready", float("nan")) - t0,
                }
                warm = i < args.warmup
                if not warm:
                    rows.append(row)
                    base_pass.append(t_pass)
                    base_import.append(t_import)
                    base_noexit.append(t_noexit)
                print(
                    f"  {'warmup' if warm else f'iter {i - args.warmup + 1}'}: "
                    f"cold {row['total'] * 1000:6.1f} ms  "
                    f"(baselines: pass {t_pass * 1000:5.1f} ms, "
                    f"import {t_import * 1000:6.1f} ms, import+_exit {t_noexit * 1000:6.1f} ms)",
                    flush=True,
                )
        finally:
            if pool is not None:
                await pool.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(platform.stop(grace=1.0), 30)
            for pid in seen_pids:  # belt and braces: runners live in sessions of their own
                if is_runner(pid):
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)

    report(rows, base_pass, base_import, base_noexit)
    return 0


def ms(x: float) -> str:
    return f"{x * 1000:7.1f}"


def report(
    rows: list[dict[str, float]],
    base_pass: list[float],
    base_import: list[float],
    base_noexit: list[float],
) -> None:
    med = statistics.median
    total = [r["total"] for r in rows]
    print(f"\ncold start, {len(rows)} iterations (ms):{'median':>27} {'min':>7} {'max':>7}")
    lines = [
        ("request -> response (cold runner)", total),
        ("baseline: python -c pass", base_pass),
        ('baseline: python -c "import yurt.runner.server"', base_import),
        ("baseline: same import, then os._exit(0) (no teardown)", base_noexit),
    ]
    for label, xs in lines:
        print(f"  {label:<55}{ms(med(xs))} {ms(min(xs))} {ms(max(xs))}")
    print("\nwhere the time goes (median ms since the request was sent; stage = difference):")
    marks = [
        ("spawn", "runner process spawned (scheduler + backend)"),
        ("listening", "runner listening (exec, imports, unpickle; runner log)"),
        ("ready", "runner setup() done (runner log)"),
        ("healthy", "health check passed, runner routable"),
        ("total", "response received"),
    ]
    prev = 0.0
    for key, label in marks:
        values = [r[key] for r in rows if r[key] == r[key]]  # drop NaN
        if not values:
            print(f"  {label:<55}     n/a")
            continue
        at = med(values)
        print(f"  {label:<55} {ms(at)}  (+{(at - prev) * 1000:.1f})")
        prev = at
    verdict = "PASS" if med(total) <= TARGET_S else "MISS"
    print(f"\ntarget: median cold start <= {TARGET_S} s: {med(total):.3f} s  {verdict}")
    print(
        f"  interpreter start + yurt.runner.server import (no teardown) ~{med(base_noexit):.3f} s"
        f" = {100 * med(base_noexit) / med(total):.0f}% of the median cold start"
    )
    print(
        "\nreproduce: .venv/bin/python "
        + " ".join(shlex.quote(a) for a in ["bench/cold_start.py", *sys.argv[1:]])
    )


def print_config(args: argparse.Namespace, cls: type[Any], app_id: str) -> None:
    import platform as pyplatform

    print("yurt cold start benchmark")
    print(f"  python {pyplatform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs")
    print(
        f"  app {app_id} (examples/echo.py::Echo, sync endpoint), keep_alive={cls.keep_alive}, "
        f"min_concurrency={cls.min_concurrency}; scheduler interval 0.05 s; health startup poll "
        f"0.01 s; platform and client in this process",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=7, help="measured cold starts")
    p.add_argument("--warmup", type=int, default=1, help="cold starts run first and not counted")
    args = p.parse_args()
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
