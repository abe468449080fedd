"""Endpoint kinds on one runner: yurt-style (one pydantic body, the byte path) against
FastAPI-style (``Request``/``Response`` parameters, served by FastAPI in the runner).

One runner process serves ``bench/kinds_app.py::Kinds``; the load generator here sends the same
small body to ``/model`` and ``/fastapi`` in alternating rounds at 1 and at 32 connections, with
the ``ConnectionPool`` and load loop of ``bench/router_overhead.py``. Figures are medians over
rounds; the ratio is the median of per-round pairs.

    .venv/bin/python bench/endpoint_kinds.py [--rounds 7] [--requests-1 3000]
        [--requests-32 20000]
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

from router_overhead import Round, load, proc_cpu_s

from yurt.loader import load_app
from yurt.packaging import write_payload
from yurt.router.pool import ConnectionPool

HERE = Path(__file__).resolve().parent
TARGETS = ("model", "fastapi")


def start_runner(payload: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m yurt.runner`` on an inherited socket; (process, port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with sock:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yurt.runner", "--payload", str(payload),
             "--port", str(port), "--fd", str(sock.fileno()), "--log-level", "warning"],
            pass_fds=(sock.fileno(),),
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
    cls = load_app(str(HERE / "kinds_app.py::Kinds"))
    with tempfile.TemporaryDirectory() as tmp:
        _, payload = write_payload(cls, Path(tmp))
        proc, port = start_runner(payload)
        pool = ConnectionPool("127.0.0.1", port)
        try:
            await wait_ready(pool)
            print("yurt endpoint kinds benchmark")
            print(f"  python {pyplatform.python_version()}, {os.cpu_count()} CPUs, runner pid "
                  f"{proc.pid}; generator and runner share the cores")  # fmt: skip
            for target in TARGETS:  # warm-up
                await load(pool, f"/{target}".encode(), 300, 1)
                await load(pool, f"/{target}".encode(), 2000, 32)
            rounds: list[Round] = []
            for conc, n in ((1, args.requests_1), (32, args.requests_32)):
                for _ in range(args.rounds):
                    for target in TARGETS:
                        cpu0, gen0 = proc_cpu_s(proc.pid), time.process_time()
                        wall, lat, errors = await load(pool, f"/{target}".encode(), n, conc)
                        cpu = {"runner": proc_cpu_s(proc.pid) - cpu0}
                        cpu["generator"] = time.process_time() - gen0
                        rounds.append(Round(target, conc, n, wall, lat, errors, cpu))
            report(rounds, args)
        finally:
            await pool.close()
            proc.terminate()
            proc.wait(30)
    return 0


def report(rounds: list[Round], args: argparse.Namespace) -> None:
    med = statistics.median
    for conc, n in ((1, args.requests_1), (32, args.requests_32)):
        by = {t: [r for r in rounds if r.conc == conc and r.target == t] for t in TARGETS}
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
        pairs = list(zip(by["model"], by["fastapi"], strict=True))
        ratio = med(f.rps / m.rps for m, f in pairs)
        added = med(f.pct(0.5) - m.pct(0.5) for m, f in pairs)
        print(f"  fastapi/model throughput {ratio:.2f}x, added p50 {added:+.3f} ms")
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\nreproduce: .venv/bin/python bench/endpoint_kinds.py {argv}".rstrip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests-1", type=int, default=3000)
    p.add_argument("--requests-32", type=int, default=20000)
    sys.exit(asyncio.run(bench(p.parse_args())))


if __name__ == "__main__":
    main()
