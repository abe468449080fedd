"""Router overhead: the same load on a runner directly and through the router, alternating.

The router (with its scheduler and local backend) runs in its own process, ``bench/_serve.py``,
serving ``bench/apps.py::Noop`` (async endpoint, max_multiplexing=64) on one warm runner. The
load generator runs here: one ``yurt.router.pool.ConnectionPool`` per target and N worker
coroutines, each sending its share of a fixed request count one after another. Rounds alternate
direct, router, direct, router, ... at 1 and at 32 connections; the figures are medians over
rounds and each ratio is the median of the per-round (paired) ratios.

    .venv/bin/python bench/router_overhead.py [--rounds 9] [--requests-1 5000]
        [--requests-32 50000] [--uvloop] [--loop auto|asyncio|uvloop] [--profile FILE] [--keys]

``--keys``: the server has API keys and every request carries ``Authorization: Key``, so the
router checks a key on each (the app is private, fal's default); the key check's CPU per
request is measured apart and printed. Direct calls carry the runner's token either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform as pyplatform
import select
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from yurt.aio import LOOP_NAMES
from yurt.router.pool import ConnectionPool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = json.dumps({"text": "hello yurt", "n": 42}).encode()
HEADERS = [(b"content-type", b"application/json")]
TICK = os.sysconf("SC_CLK_TCK")

# Targets: (description, predicate on the summary) -> printed PASS/MISS.
TARGET_RATIO_32 = 0.75  # the project's target: >= 0.75x direct at 32 connections
TARGET_ADDED_P50_MS = 0.15  # and <= 0.15 ms added p50 at 1 connection
TARGET_RSS_MIB = 100.0


# -- processes -----------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status_mib(pid: int, key: str) -> float:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def has_uvloop(pid: int) -> bool:
    """Whether uvloop's extension is mapped into ``pid`` (i.e. it was imported there)."""
    with open(f"/proc/{pid}/maps") as f:
        return any("uvloop" in line for line in f)


def is_runner(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"yurt.runner" in f.read()
    except OSError:
        return False


class Server:
    """``bench/_serve.py`` in its own session (process group); stopped and reaped on exit."""

    def __init__(self, loop: str, profile: str, keys: bool = False) -> None:
        cmd = [sys.executable, str(HERE / "_serve.py"), "--loop", loop]
        if profile:
            cmd += ["--profile", profile]
        if keys:
            cmd.append("--keys")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True, text=True
        )
        self.info: dict[str, object] = {}

    def wait_ready(self, timeout: float = 90.0) -> dict[str, object]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"bench/_serve.py did not report ready within {timeout:g}s")
        self.info = json.loads(line)
        return self.info

    def stop(self) -> None:
        runner_pid = self.info.get("runner_pid")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        # The local backend starts each runner in a session of its own.
        if isinstance(runner_pid, int) and is_runner(runner_pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner_pid, signal.SIGKILL)


# -- load ----------------------------------------------------------------------------------


@dataclass
class Round:
    target: str
    conc: int
    n: int
    wall: float
    lat: list[float]
    errors: int
    cpu: dict[str, float]

    @property
    def rps(self) -> float:
        return self.n / self.wall

    def pct(self, q: float) -> float:
        if not self.lat:
            return float("nan")
        s = sorted(self.lat)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000


def target_stats(t: str, rs: list[Round], cpu_of: tuple[str, ...]) -> dict[str, float]:
    """Medians (and the spread) of one target's rounds, keyed ``{t}_...``."""
    med = statistics.median
    out = {
        f"{t}_rps": med(r.rps for r in rs),
        f"{t}_rps_min": min(r.rps for r in rs),
        f"{t}_rps_max": max(r.rps for r in rs),
        f"{t}_p50": med(r.pct(0.50) for r in rs),
        f"{t}_p99": med(r.pct(0.99) for r in rs),
        f"{t}_errors": float(sum(r.errors for r in rs)),
    }
    for who in cpu_of:
        out[f"{t}_cpu_{who}_us"] = med(r.cpu[who] / max(r.n, 1) * 1e6 for r in rs)
    return out


Target = tuple[ConnectionPool, bytes, list[tuple[bytes, bytes]]]


async def load(
    pool: ConnectionPool, path: bytes, n: int, conc: int, headers: list[tuple[bytes, bytes]]
) -> tuple[float, list, int]:
    """``n`` requests from ``conc`` sequential workers; (wall s, latencies s, non-200 count)."""
    lat: list[float] = []
    errors = 0
    expected = json.loads(BODY)

    async def worker(count: int) -> None:
        nonlocal errors
        perf = time.perf_counter
        request = pool.request
        append = lat.append
        for _ in range(count):
            t0 = perf()
            reply = await request(b"POST", path, headers, BODY, 30.0)
            append(perf() - t0)
            if reply.status != 200:
                errors += 1

    first = await pool.request(b"POST", path, headers, BODY, 30.0)
    if first.status != 200 or json.loads(first.body) != expected:
        raise RuntimeError(f"unexpected reply {first.status} {first.body[:200]!r}")
    shares = [n // conc + (1 if i < n % conc else 0) for i in range(conc)]
    t0 = time.perf_counter()
    async with asyncio.timeout(max(120.0, n / 50)):
        await asyncio.gather(*(worker(k) for k in shares if k))
    return time.perf_counter() - t0, lat, errors


async def measure(
    pools: dict[str, Target],
    target: str,
    n: int,
    conc: int,
    pids: dict[str, int],
) -> Round:
    pool, path, headers = pools[target]
    before = {k: proc_cpu_s(p) for k, p in pids.items()}
    gen0 = time.process_time()
    wall, lat, errors = await load(pool, path, n, conc, headers)
    cpu = {k: proc_cpu_s(p) - before[k] for k, p in pids.items()}
    cpu["generator"] = time.process_time() - gen0
    return Round(target, conc, n, wall, lat, errors, cpu)


# -- report --------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def summarize(rounds: list[Round], conc: int) -> dict[str, float]:
    by = {t: [r for r in rounds if r.conc == conc and r.target == t] for t in ("direct", "router")}
    med = statistics.median
    out: dict[str, float] = {}
    for t, rs in by.items():
        out.update(target_stats(t, rs, ("router", "runner", "generator")))
    pairs = list(zip(by["direct"], by["router"], strict=True))
    out["ratio"] = med(r.rps / d.rps for d, r in pairs)
    out["added_p50"] = med(r.pct(0.50) - d.pct(0.50) for d, r in pairs)
    return out


def print_table(s: dict[str, float], conc: int, n: int, rounds: int) -> None:
    print(f"\n{conc} connection(s), {n} requests per round, {rounds} rounds (medians):")
    print(
        f"  {'target':<7} {'req/s':>8} {'(min..max)':>17} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}  CPU us/req: {'router':>6} {'runner':>6} {'gen':>6}"
    )
    for t in ("direct", "router"):
        spread = f"({s[f'{t}_rps_min']:.0f}..{s[f'{t}_rps_max']:.0f})"
        print(
            f"  {t:<7} {s[f'{t}_rps']:>8.0f} {spread:>17} {s[f'{t}_p50']:>8.3f} "
            f"{s[f'{t}_p99']:>8.3f} {s[f'{t}_errors']:>6.0f}              "
            f"{s[f'{t}_cpu_router_us']:>6.0f} {s[f'{t}_cpu_runner_us']:>6.0f} "
            f"{s[f'{t}_cpu_generator_us']:>6.0f}"
        )
    print(
        f"  router/direct throughput {s['ratio']:.2f}x   "
        f"added p50 {s['added_p50']:+.3f} ms   (medians of per-round pairs)"
    )


def print_profile(path: str, top: int = 25) -> None:
    import pstats

    print(f"\nrouter process cProfile ({path}), top {top} by own time:")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(top)


# -- main ----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    server = Server(args.loop, args.profile, keys=args.keys)
    try:
        info = server.wait_ready()
        headers = list(HEADERS)
        if info.get("key"):
            headers.append((b"authorization", f"Key {info['key']}".encode()))
        router_pid = int(info["pid"])  # type: ignore[call-overload]
        runner_pid = int(info["runner_pid"])  # type: ignore[call-overload]
        rhost, rport = str(info["router"]).removeprefix("http://").rsplit(":", 1)
        dhost, dport = str(info["runner"]).rsplit(":", 1)
        token = str(info.get("token") or "")
        pools: dict[str, Target] = {
            "direct": (ConnectionPool(dhost, int(dport), token=token), b"/", headers),
            "router": (ConnectionPool(rhost, int(rport)), f"/{info['app_id']}".encode(), headers),
        }
        pids = {"router": router_pid, "runner": runner_pid}
        loop = asyncio.get_running_loop()
        print_config(args, info, loop, router_pid, runner_pid)

        # Warm-up: connections opened, code paths and allocators warm on both targets.
        for target in ("direct", "router"):
            pool, path, _ = pools[target]
            await load(pool, path, 300, 1, headers)
            await load(pool, path, 2000, 32, headers)

        if args.profile:
            os.kill(router_pid, signal.SIGUSR1)
        rounds: list[Round] = []
        t_start = time.monotonic()
        for conc, n in ((1, args.requests_1), (32, args.requests_32)):
            for i in range(args.rounds):
                for target in ("direct", "router"):
                    r = await measure(pools, target, n, conc, pids)
                    rounds.append(r)
                    if args.verbose:
                        print(
                            f"  round {i + 1} c={conc} {target}: {r.rps:.0f} req/s "
                            f"p50 {r.pct(0.5):.3f} ms p99 {r.pct(0.99):.3f} ms",
                            flush=True,
                        )
        measured_s = time.monotonic() - t_start
        if args.profile:
            os.kill(router_pid, signal.SIGUSR2)
        rss = proc_status_mib(router_pid, "VmRSS")
        hwm = proc_status_mib(router_pid, "VmHWM")
        runner_rss = proc_status_mib(runner_pid, "VmRSS")
        for pool, _, _ in pools.values():
            await pool.close()

        s1 = summarize(rounds, 1)
        s32 = summarize(rounds, 32)
        print_table(s1, 1, args.requests_1, args.rounds)
        print_table(s32, 32, args.requests_32, args.rounds)
        print(
            f"\nrouter process RSS after load: {rss:.1f} MiB (peak VmHWM {hwm:.1f} MiB); "
            f"runner RSS {runner_rss:.1f} MiB; measured rounds took {measured_s:.1f} s"
        )
        print("\ntargets:")
        print(
            f"  router >= {TARGET_RATIO_32}x direct throughput at 32 conns: "
            f"{s32['ratio']:.2f}x  {mark(s32['ratio'] >= TARGET_RATIO_32)}"
        )
        print(
            f"  added p50 at 1 conn <= {TARGET_ADDED_P50_MS} ms: "
            f"{s1['added_p50']:.3f} ms  {mark(s1['added_p50'] <= TARGET_ADDED_P50_MS)}"
        )
        print(
            f"  router RSS <= {TARGET_RSS_MIB:.0f} MiB: {rss:.1f} MiB  "
            f"{mark(rss <= TARGET_RSS_MIB)}"
        )
        if args.keys:
            print(
                f"\nkey check (Gate.check of a valid key, in this process): {key_check_us():.2f} us"
            )
        errors = s1["direct_errors"] + s1["router_errors"] + s32["direct_errors"]
        errors += s32["router_errors"]
        if errors:
            print(f"\nWARNING: {errors:.0f} non-200 replies during measurement")
        if args.profile:
            print("\nNOTE: --profile slows the router; the figures above are not representative.")
    finally:
        server.stop()
    if args.profile:
        print_profile(args.profile)
    print(f"\nreproduce: {reproduce_cmd()}")
    return 0


def print_config(
    args: argparse.Namespace,
    info: dict[str, object],
    loop: asyncio.AbstractEventLoop,
    router_pid: int,
    runner_pid: int,
) -> None:
    from yurt.loader import load_app
    from yurt.spec import build_spec

    spec = build_spec(load_app(str(HERE / "apps.py::Noop")))
    ep = spec.endpoints[0]
    print("yurt router overhead benchmark")
    print(f"  python {pyplatform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs")
    print(
        f"  runner: app {info['app_id']} max_multiplexing={spec.max_multiplexing}, endpoint "
        f"{ep.path!r} async={ep.is_async}, event loop "
        f"{'uvloop' if has_uvloop(runner_pid) else 'asyncio'} "
        f"(--loop {args.loop}), pid {runner_pid}, {info['runner']}"
    )
    print(
        f"  router: own process pid {router_pid}, {info['router']}, event loop {info['loop']}"
        f" (--loop {args.loop})"
    )
    print(
        f"  generator: this process, ConnectionPool per target, loop "
        f"{type(loop).__module__}.{type(loop).__name__}; body {len(BODY)} bytes"
    )
    print(
        "  note: generator, router and runner share the same cores; 'direct' runs one process "
        "fewer than 'router'",
        flush=True,
    )


def key_check_us(n: int = 200_000) -> float:
    """The median CPU time of the router's key check (header scan + HMAC + lookup), in us."""
    import tempfile

    from yurt.config import KeysConfig
    from yurt.keys import KeyStore
    from yurt.router.gate import Gate

    with tempfile.TemporaryDirectory(prefix="yurt-bench-keys-") as tmp:
        store = KeyStore(Path(tmp))
        _, key = store.create("API", None, time.time())
        gate = Gate(store, KeysConfig(), host="127.0.0.1", public=False, admin_token=None)
        headers = [*HEADERS, (b"authorization", f"Key {key}".encode())]
        times = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(n // 5):
                gate.check("private", headers)
            times.append((time.process_time() - t0) / (n // 5) * 1e6)
        return statistics.median(times)


def reproduce_cmd() -> str:
    return ".venv/bin/python " + " ".join(
        shlex.quote(a) for a in ["bench/router_overhead.py", *sys.argv[1:]]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=9, help="alternating rounds per concurrency")
    p.add_argument("--requests-1", type=int, default=5000, help="requests per round at c=1")
    p.add_argument("--requests-32", type=int, default=50000, help="requests per round at c=32")
    p.add_argument("--uvloop", action="store_true", help="run the load generator on uvloop")
    p.add_argument(
        "--loop",
        choices=LOOP_NAMES,
        default="auto",
        help="event loop of the router and runner, as yurt run --loop (auto: uvloop if installed)",
    )
    p.add_argument("--profile", default="", help="cProfile the router during the rounds to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="print every round")
    p.add_argument(
        "--keys", action="store_true", help="API keys on: every request carries a key to check"
    )
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        sys.exit(uvloop.run(bench(args)))
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
