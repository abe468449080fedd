"""Endpoint kinds on one runner: yurt-style (one pydantic body, the byte path) against
FastAPI-style (``Request``/``Response`` parameters, served by FastAPI in the runner).

One runner process serves ``bench/kinds_app.py::Kinds``; the load generator here sends the same
small body to ``/model`` and ``/fastapi`` in alternating rounds at 1 and at 32 connections, with
the ``ConnectionPool`` and load loop of ``bench/router_overhead.py``. With ``--baseline-src``
a second runner, started from another checkout's ``src`` (an older commit), serves
``bench/apps.py::Noop`` (the same async echo, yurt's way) as the ``baseline`` target, so that
the byte path's speed is compared across commits in the same rounds. Figures are medians over
rounds; each ratio is the median of per-round pairs.

    .venv/bin/python bench/endpoint_kinds.py [--rounds 7] [--requests-1 3000]
        [--requests-32 20000] [--baseline-src ../other-checkout/src]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform as pyplatform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from router_overhead import HEADERS, Round, load, proc_cpu_s

from yurt.loader import load_app
from yurt.packaging import write_payload
from yurt.router.pool import ConnectionPool

HERE = Path(__file__).resolve().parent


def start_runner(payload: Path, src: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """``python -m yurt.runner`` on an inherited socket, from ``src`` if given; (process, port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=src) if src else None
    with sock:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yurt.runner", "--payload", str(payload),
             "--port", str(port), "--fd", str(sock.fileno()), "--log-level", "warning"],
            pass_fds=(sock.fileno(),),
            env=env,
        )  # fmt: skip
    return proc, port


async def wait_ready(pool: ConnectionPool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = await pool.request(b"GET", b"/_yurt/health", [], b"", 5.0)
            if reply.status == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the runner did not become ready")


async def bench(args: argparse.Namespace) -> int:
    procs: list[subprocess.Popen[bytes]] = []
    pools: list[ConnectionPool] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _, payload = write_payload(load_app(str(HERE / "kinds_app.py::Kinds")), Path(tmp))
            proc, port = start_runner(payload)
            procs.append(proc)
            pools.append(ConnectionPool("127.0.0.1", port))
            # target -> (pool, path, runner pid)
            targets = {
                "model": (pools[0], b"/model", proc.pid),
                "fastapi": (pools[0], b"/fastapi", proc.pid),
            }
            if args.baseline_src:
                _, base = write_payload(load_app(str(HERE / "apps.py::Noop")), Path(tmp) / "b")
                bproc, bport = start_runner(base, args.baseline_src)
                procs.append(bproc)
                pools.append(ConnectionPool("127.0.0.1", bport))
                targets = {"baseline": (pools[1], b"/", bproc.pid), **targets}
            for pool in pools:
                await wait_ready(pool)
            print("yurt endpoint kinds benchmark")
            print(f"  python {pyplatform.python_version()}, {os.cpu_count()} CPUs; runners "
                  f"{[p.pid for p in procs]}; generator and runners share the cores; baseline "
                  f"src: {args.baseline_src or '-'}")  # fmt: skip
            for pool, path, _ in targets.values():  # warm-up
                await load(pool, path, 300, 1, list(HEADERS))
                await load(pool, path, 2000, 32, list(HEADERS))
            rounds = await measure_all(targets, args)
            report(rounds, list(targets), args)
        finally:
            for pool in pools:
                await pool.close()
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    return 0


async def measure_all(
    targets: dict[str, tuple[ConnectionPool, bytes, int]], args: argparse.Namespace
) -> list[Round]:
    rounds: list[Round] = []
    for conc, n in ((1, args.requests_1), (32, args.requests_32)):
        for _ in range(args.rounds):
            for target, (pool, path, pid) in targets.items():
                cpu0, gen0 = proc_cpu_s(pid), time.process_time()
                wall, lat, errors = await load(pool, path, n, conc, list(HEADERS))
                cpu = {"runner": proc_cpu_s(pid) - cpu0, "generator": time.process_time() - gen0}
                rounds.append(Round(target, conc, n, wall, lat, errors, cpu))
    return rounds


def report(rounds: list[Round], names: list[str], args: argparse.Namespace) -> None:
    med = statistics.median
    for conc, n in ((1, args.requests_1), (32, args.requests_32)):
        by = {t: [r for r in rounds if r.conc == conc and r.target == t] for t in names}
        print(f"\n{conc} connection(s), {n} requests per round, {args.rounds} rounds (medians):")
        print(f"  {'endpoint':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'runner us/req':>14}"
              f" {'errors':>6}")  # fmt: skip
        for t, rs in by.items():
            print(
                f"  {t:<8} {med(r.rps for r in rs):>8.0f} {med(r.pct(0.5) for r in rs):>8.3f} "
                f"{med(r.pct(0.99) for r in rs):>8.3f} "
                f"{med(r.cpu['runner'] / r.n * 1e6 for r in rs):>14.0f} "
                f"{sum(r.errors for r in rs):>6}"
            )
        pairs = [("fastapi", "model")] + ([("model", "baseline")] if "baseline" in by else [])
        for a, b in pairs:
            ratio = med(x.rps / y.rps for x, y in zip(by[a], by[b], strict=True))
            added = med(x.pct(0.5) - y.pct(0.5) for x, y in zip(by[a], by[b], strict=True))
            print(f"  {a}/{b} throughput {ratio:.2f}x, p50 {added:+.3f} ms")
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\nreproduce: .venv/bin/python bench/endpoint_kinds.py {argv}".rstrip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests-1", type=int, default=3000)
    p.add_argument("--requests-32", type=int, default=20000)
    p.add_argument("--baseline-src", default="", help="src/ of a checkout for the baseline")
    args = p.parse_args()
    if args.baseline_src:
        args.baseline_src = str(Path(args.baseline_src).resolve())
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
