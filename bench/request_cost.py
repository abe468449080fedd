"""Instructions per request in the router and in the runner, two source trees in one run.

Wall-clock figures move with whatever else the machine runs; instruction counts do not. Each
tree's ``bench/_serve.py`` process (the router, with its scheduler and local backend, and the
runner it starts for ``bench/apps.py::Noop``) runs under ``valgrind --tool=callgrind`` with
instrumentation off until the measurement starts (``--trace-children=yes``: the runner too). This
process then sends requests one after another over one keep-alive connection (``--conns``:
that many at once), through the router and straight to the runner (with its token), and reads
both processes' instruction counts with ``callgrind_control`` around each phase. An idle phase
of the same processes, as long as the measured ones, is subtracted (timers, health checks), so
the figures are the cost of the requests.

    PYTHONPATH=$PWD/src .venv/bin/python bench/request_cost.py \\
        [--base /tmp/wt-base/src] [--new src] [--requests 2000] [--conns 1] [--keep DIR] [--keys]

``--base``/``--new``: the ``src`` directory of each tree (``git worktree add --detach
/tmp/wt-base c22f5cb`` makes an older one); either may be left out with ``--base ''``.
``--keys``: the server has an API key and the app is private (fal's default), so each routed
call shows the key and the router checks it (``router_overhead.py --keys`` alike).
``--keep DIR`` keeps the callgrind dumps there for ``callgrind_annotate`` (C-level: the
interpreter's own functions, the extensions', the allocator's).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = json.dumps({"text": "hello yurt", "n": 42}).encode()
TOKEN_HEADER = "x-yurt-runner-token"


@dataclass
class Side:
    """One tree's processes under callgrind."""

    name: str
    src: Path
    out: Path
    proc: subprocess.Popen[str] | None = None
    info: dict[str, object] = field(default_factory=dict)
    keys: bool = False  # the server has a key, the app is private, routed calls show the key

    def start(self, timeout: float) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--trace-children=yes",
            f"--callgrind-out-file={self.out}/cg.%p",
            sys.executable,
            str(HERE / "_serve.py"),
            *(["--keys"] if self.keys else []),
        ]
        env = dict(os.environ, PYTHONPATH=str(self.src))
        log = open(self.out / "valgrind.log", "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env=env,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"{self.name}: not ready within {timeout:g} s ({self.out})")
        self.info = json.loads(line)

    def pids(self) -> dict[str, int]:
        return {"router": int(self.info["pid"]), "runner": int(self.info["runner_pid"])}  # type: ignore[call-overload]

    def stop(self) -> None:
        if self.proc is None:
            return
        runner = self.info.get("runner_pid")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if isinstance(runner, int):  # the local backend starts a runner in a session of its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner, signal.SIGKILL)


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def dumped_total(out: Path, pid: int) -> int:
    """The instruction total of ``pid``'s newest dump in ``out``."""
    dumps = sorted(out.glob(f"cg.{pid}.*"), key=lambda p: int(p.suffix[1:]))
    text = dumps[-1].read_text(errors="replace")
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return int(m.group(1))


def phase(side: Side, work: object, label: str) -> tuple[dict[str, int], float]:
    """Instructions of each process while ``work()`` runs, and its wall time."""
    pids = side.pids()
    for pid in pids.values():
        control("-z", str(pid))
    t0 = time.monotonic()
    work()  # type: ignore[operator]
    wall = time.monotonic() - t0
    counts = {}
    for who, pid in pids.items():
        control("-d", f"{label}", str(pid))
        counts[who] = dumped_total(side.out, pid)
    return counts, wall


def requests(
    host: str, port: int, path: str, n: int, headers: dict[str, str], conns: int = 1
) -> None:
    """``n`` POSTs over ``conns`` keep-alive connections at once, each sending its share one
    after another; each must be a 200."""
    if conns > 1:
        shares = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
        with ThreadPoolExecutor(conns) as pool:
            done = [pool.submit(requests, host, port, path, k, headers) for k in shares if k]
            for future in done:
                future.result()
        return
    conn = http.client.HTTPConnection(host, port, timeout=120)
    hdrs = {"content-type": "application/json", **headers}
    try:
        for _ in range(n):
            conn.request("POST", path, BODY, hdrs)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{path}: {reply.status} {data[:200]!r}")
    finally:
        conn.close()


def measure(side: Side, n: int, warm: int, conns: int) -> dict[str, float]:
    info = side.info
    rhost, rport = str(info["router"]).removeprefix("http://").rsplit(":", 1)
    dhost, dport = str(info["runner"]).rsplit(":", 1)
    token = {TOKEN_HEADER: str(info["token"])} if info.get("token") else {}
    key = {"authorization": f"Key {info['key']}"} if info.get("key") else {}
    via_router = (rhost, int(rport), f"/{info['app_id']}", key)
    direct = (dhost, int(dport), "/", token)
    for target in (via_router, direct):
        requests(*target[:3], warm, target[3])
    for pid in side.pids().values():
        control("-i", "on", str(pid))
    for target in (via_router, direct):  # warm again, now instrumented
        requests(*target[:3], warm, target[3])
    routed, t_routed = phase(side, lambda: requests(*via_router[:3], n, key, conns), "router")
    straight, t_direct = phase(side, lambda: requests(*direct[:3], n, token, conns), "direct")
    idle_s = max(t_routed, t_direct)
    idle, t_idle = phase(side, lambda: time.sleep(idle_s), "idle")

    def per_request(counts: dict[str, int], wall: float, who: str) -> float:
        return (counts[who] - idle[who] * wall / t_idle) / n

    return {
        "router": per_request(routed, t_routed, "router"),
        "runner_routed": per_request(routed, t_routed, "runner"),
        "runner_direct": per_request(straight, t_direct, "runner"),
        "idle_router_per_s": idle["router"] / t_idle,
        "idle_runner_per_s": idle["runner"] / t_idle,
        "wall_routed_s": t_routed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default="/tmp/wt-base/src", help="the older tree's src ('' : none)")
    p.add_argument("--new", default=str(ROOT / "src"), help="this tree's src ('' : none)")
    p.add_argument("--requests", type=int, default=2000, help="requests per measured phase")
    p.add_argument("--warm", type=int, default=200, help="warm-up requests per target")
    p.add_argument("--conns", type=int, default=1, help="connections sending at once")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--keep", default="", help="keep the callgrind dumps in this directory")
    p.add_argument(
        "--keys", action="store_true", help="the server has an API key; routed calls show it"
    )
    args = p.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (with callgrind_control) is needed")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="yurt-cost-"))
    results: dict[str, dict[str, float]] = {}
    try:
        for name, src in (("base", args.base), ("new", args.new)):
            if not src:
                continue
            side = Side(name, Path(src).resolve(), work / name, keys=args.keys)
            try:
                side.start(args.ready_timeout)
                results[name] = measure(side, args.requests, args.warm, args.conns)
            finally:
                side.stop()
            print(f"{name} ({src}): {json.dumps(results[name])}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\ninstructions per request, {args.requests} requests a phase, {args.conns} connection(s):"
    )
    print(f"  {'tree':<6} {'router':>10} {'runner (routed)':>16} {'runner (direct)':>16}")
    for name, r in results.items():
        print(
            f"  {name:<6} {r['router']:>10,.0f} {r['runner_routed']:>16,.0f} "
            f"{r['runner_direct']:>16,.0f}"
        )
    if len(results) == 2:
        b, n = results["base"], results["new"]
        print(
            f"  new/base: router {n['router'] / b['router']:.3f}x, "
            f"runner {n['runner_direct'] / b['runner_direct']:.3f}x"
        )
    print("\nreproduce: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
