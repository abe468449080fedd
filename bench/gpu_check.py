"""The measuring half of ``bench/gpu_check.sh`` (run that; it sets up the paths and the wheels).

1. The GPUs: NVML's list of the host, what the runner's probe makes of it, and later the GPUs
   the served runner itself reports in ``/_yurt/info``.
2. ``yurt run bench/torch_app.py::TorchMatmul`` on a free port; the first request starts the
   runner (min_concurrency=0). Cold start = from launching ``yurt run`` to the first 200, CUDA
   initialisation included; setup()'s own time comes from the App.
3. Cold start with a template against without (docs/cold-starts.md): the same App twice in one
   in-process platform, one forked from a template that imported torch (``preload``), one a
   fresh interpreter, each timed from a request at zero runners to its response, alternating;
   the forked runner's device is named (CUDA initialised in the child, never in the template).
4. Requests/s of the matmul endpoint through the router against the same ``Kernel`` called in
   this process, both with the same number of concurrent callers, alternating rounds; medians of
   the rounds and of the per-round ratios.

Without a matching GPU it shows ``yurt run`` failing fast with "no GPU found" and exits 1.
``--dry-run`` does it all with ``CpuMatmul`` (a pure Python kernel on a CPU runner) to check the
plumbing where there is no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
APP_FILE = ROOT / "bench" / "torch_app.py"
GPU_TYPES = ["GPU-H100", "GPU-H200", "GPU-B200", "GPU-A100"]  # TorchMatmul's machine_type
START_DEADLINE_S = 180.0
JSON = {"content-type": "application/json"}


def say(*parts: object) -> None:
    print(*parts, flush=True)


def section(title: str) -> None:
    say(f"\n== {title}")


# -- GPUs ---------------------------------------------------------------------------------------


def probe_gpus() -> bool:
    """Print the host's GPUs and the runner probe's verdict; True when a GPU App can run."""
    from yurt.errors import SchedulingError
    from yurt.machines import machine_types_of_gpu
    from yurt.runner.gpus import list_gpus, load_nvml, probe

    nvml = load_nvml()
    listing = list_gpus(nvml)
    if nvml is not None and listing.gpus:
        with contextlib.suppress(Exception):
            nvml.nvmlInit()
            driver = nvml.nvmlSystemGetDriverVersion()
            nvml.nvmlShutdown()
            say(f"driver {driver.decode() if isinstance(driver, bytes) else driver}")
    say(f"NVML sees {len(listing.gpus)} GPU(s){'' if listing.gpus else f': {listing.error}'}")
    for g in listing.gpus:
        types = machine_types_of_gpu(g.name, g.memory_total_mib) or ["(no machine type)"]
        say(
            f"  [{g.index}] {g.name}  {g.memory_total_mib} MiB  used {g.memory_used_mib} MiB  "
            f"util {g.utilization_pct}%  {g.uuid}  -> {', '.join(types)}"
        )
    say(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
    try:
        monitor = probe(GPU_TYPES, 1, os.environ, nvml)
    except SchedulingError as exc:
        say(f"runner probe for {GPU_TYPES} x1: REFUSED: {exc}")
        return False
    say(f"runner probe for {GPU_TYPES} x1: OK, sees {[g.name for g in monitor.gpus]}")
    return True


# -- yurt run -----------------------------------------------------------------------------------


def yurt_run_cmd(target: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "yurt.cli", "run", target, "--port", "0",
            "--data-dir", str(data_dir), "--log-level", "warning"]  # fmt: skip


@contextlib.contextmanager
def served(target: str, data_dir: Path) -> Iterator[tuple[str, float, float]]:
    """Start ``yurt run``; yield (app URL, launch time, time the URL was printed); stop it."""
    log = (data_dir / "yurt-run.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        yurt_run_cmd(target, data_dir),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # so that the whole tree can be ended whatever happens
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=START_DEADLINE_S)
            if match := re.search(r"at (http://\S+)", line):
                url = match.group(1)
        yield url, t0, time.perf_counter()
    except queue.Empty:
        raise SystemExit(f"yurt run printed no URL; see {log.name}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stdout.close()
        log.close()


def show_fail_fast(target: str, data_dir: Path) -> None:
    """What a user sees running the GPU App here: the exit code, the time, the message."""
    t0 = time.perf_counter()
    out = subprocess.run(
        yurt_run_cmd(target, data_dir), capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - t0
    last = (out.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
    say(f"yurt run {target} -> exit {out.returncode} after {elapsed:.2f}s")
    say(f"  {last}")


def post(url: str, timeout: float) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=b"{}", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def cold_start(url: str, t0: float, t_url: float) -> dict[str, Any]:
    """The first request (it starts the runner); retried until 200 or the deadline."""
    deadline = time.perf_counter() + START_DEADLINE_S
    while True:
        status, body = post(url, timeout=START_DEADLINE_S)
        if status == 200:
            break
        if time.perf_counter() > deadline:
            raise SystemExit(f"no 200 from {url} within {START_DEADLINE_S:g}s: {status} {body!r}")
        say(f"  first request answered {status}: {body!r}; again")
    t_first = time.perf_counter()
    info = post(url + "/info", timeout=30)[1]
    return {
        "launch_to_first_200_s": t_first - t0,
        "router_up_to_first_200_s": t_first - t_url,
        **info,
    }


def runner_info(url: str) -> dict[str, Any]:
    """The served runner's own /_yurt/info (its GPUs as it sees them)."""
    base = url.rsplit("/", 2)[0]
    for app in get(base + "/_yurt/apps"):
        for r in app["runners"]:
            if r["port"]:
                try:
                    info: dict[str, Any] = get(f"http://127.0.0.1:{r['port']}/_yurt/info")
                except urllib.error.HTTPError as exc:
                    # The runner answers only the router (its token): say so, measure on.
                    return {"runner_id": r.get("runner_id"), "gpus": f"not shown ({exc.code})"}
                return info
    return {}


# -- templates ----------------------------------------------------------------------------------


async def until(predicate: Any, timeout: float = START_DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s")
        await asyncio.sleep(0.05)


async def _fork_vs_fresh(base: type[Any], rounds: int, data_dir: Path) -> dict[str, Any]:
    """Cold starts of ``base`` forked from a template and fresh, in one platform, alternating."""
    from yurt.config import RouterConfig, SchedulerConfig, ServerConfig
    from yurt.logging import configure
    from yurt.platform import Platform

    configure("warning")  # the platform's own lines would bury the figures

    preload = ["torch"] if base.kernel_kind == "torch" else None

    class Template(base, fork_runners=True, keep_alive=1.0):  # type: ignore[valid-type,misc]
        __module__ = base.__module__
        app_name = f"{base.app_name}-template"

    class Fresh(base, fork_runners=False, keep_alive=1.0):  # type: ignore[valid-type,misc]
        __module__ = base.__module__
        app_name = f"{base.app_name}-fresh"

    Template.preload = preload
    config = ServerConfig(
        data_dir=data_dir, router=RouterConfig(port=0), scheduler=SchedulerConfig(interval=0.05)
    )
    platform = Platform(config)
    times: dict[str, list[float]] = {"template": [], "fresh": []}
    info: dict[str, Any] = {}
    await platform.start()
    try:
        ids = {"template": await platform.add_app(Template), "fresh": await platform.add_app(Fresh)}
        templates = platform.backend.templates  # type: ignore[attr-defined]
        # Up ahead of demand, torch imported: as it would be long before a first request.
        await until(lambda: templates.pids() and templates.settled())
        async with aiohttp.ClientSession() as session:
            for i in range(rounds):
                for kind in sorted(ids, reverse=i % 2 == 1):
                    app_id = ids[kind]
                    await until(lambda a=app_id: not platform.backend.runners(a))
                    t0 = time.perf_counter()
                    async with session.post(f"{platform.url}/{app_id}", json={}) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise SystemExit(f"{kind}: {resp.status} {await resp.text()}")
                    times[kind].append(time.perf_counter() - t0)
                    if kind == "template" and not info:
                        async with session.post(f"{platform.url}/{app_id}/info", json={}) as r:
                            info = await r.json()
                say(f"  round {i + 1}: template {times['template'][-1]:.3f}s  "
                    f"fresh {times['fresh'][-1]:.3f}s")  # fmt: skip
        info["not_forked"] = templates.reasons()
        info["template_pids"] = list(templates.pids().values())
    finally:
        await platform.stop(grace=1.0)
    return {"times": times, "info": info}


FORK_SUMMARY: list[str] = []


def fork_vs_fresh(base: type[Any], rounds: int, data_dir: Path) -> None:
    """Print the template against fresh comparison."""
    found = asyncio.run(_fork_vs_fresh(base, rounds, data_dir))
    times, info = found["times"], found["info"]
    on, off = statistics.median(times["template"]), statistics.median(times["fresh"])
    say(f"median request at zero runners -> 200: template {on:.3f}s, fresh {off:.3f}s, "
        f"ratio {off / on:.1f}x")  # fmt: skip
    FORK_SUMMARY.append(f"cold start with a template {on:.2f}s against {off:.2f}s fresh")
    say(f"forked runner: device {info.get('device')}, setup {info.get('setup_s')}s, "
        f"CUDA_VISIBLE_DEVICES={info.get('cuda_visible_devices')!r}, pid {info.get('pid')}, "
        f"template pids {info.get('template_pids')}")  # fmt: skip
    if info.get("not_forked"):
        say(f"runners not forked because: {info['not_forked']}")


# -- load ---------------------------------------------------------------------------------------


async def _router_round(url: str, concurrency: int, seconds: float) -> tuple[int, int]:
    ok = bad = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok, bad
            while time.perf_counter() < deadline:
                async with session.post(url, data=b"{}", headers=JSON) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                    else:
                        bad += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, bad


def router_round(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    t0 = time.perf_counter()
    ok, bad = asyncio.run(_router_round(url, concurrency, seconds))
    return ok / (time.perf_counter() - t0), bad


def direct_round(kernel: Any, concurrency: int, seconds: float) -> float:
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            kernel()
            counts[i] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU App and kernel: plumbing only")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="length of each load round")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--fork-rounds", type=int, default=3, help="cold starts each, template/fresh")
    args = p.parse_args()
    sys.path.insert(0, str(APP_FILE.parent))
    from torch_app import CPU_SIZE, SIZE, Kernel

    section("machine")
    say(f"host {platform.node()}  {platform.machine()}  {os.cpu_count()} CPUs")
    say(f"python {platform.python_version()} at {sys.executable}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        say(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {cuda}")
    except ImportError:
        say("torch: not installed")

    section("GPUs (NVML, and the runner's probe)")
    has_gpu = probe_gpus()
    app = "CpuMatmul" if args.dry_run else "TorchMatmul"
    target = f"{APP_FILE}::{app}"
    with tempfile.TemporaryDirectory(prefix="yurt-gpu-check-") as tmp:
        data_dir = Path(tmp)
        if not has_gpu and not args.dry_run:
            section("fail fast: no GPU for the App")
            show_fail_fast(target, data_dir)
            say("\nRESULT: no GPU found; nothing to measure (use --dry-run to check the plumbing)")
            return 1

        section(f"cold start: yurt run {APP_FILE.name}::{app}, first request")
        with served(target, data_dir) as (url, t0, t_url):
            cold = cold_start(url, t0, t_url)
            say(f"launch -> first 200: {cold['launch_to_first_200_s']:.2f}s "
                f"(router up -> first 200: {cold['router_up_to_first_200_s']:.2f}s)")  # fmt: skip
            say(f"setup() itself (torch import, CUDA init, first matmul): {cold['setup_s']:.2f}s")
            visible = cold["cuda_visible_devices"]
            say(f"runner device: {cold['device']}; CUDA_VISIBLE_DEVICES={visible!r}")
            info = runner_info(url)
            gpus = json.dumps(info.get("gpus"))
            say(f"runner {info.get('runner_id')} (pid {info.get('pid')}) /_yurt/info gpus: {gpus}")

            rounds = f"{args.rounds} rounds of {args.seconds:g}s"
            section(f"cold start with a template against fresh: {app}, {args.fork_rounds} rounds")
            from torch_app import CpuMatmul, TorchMatmul

            base = CpuMatmul if args.dry_run else TorchMatmul
            fork_vs_fresh(base, args.fork_rounds, data_dir / "templates")

            section(f"throughput: {args.concurrency} callers, {rounds}")
            t_init = time.perf_counter()
            size = CPU_SIZE if args.dry_run else SIZE
            kernel = Kernel("python" if args.dry_run else "torch", size)
            kernel()
            init_s = time.perf_counter() - t_init
            say(f"in-process kernel init (same work as setup()): {init_s:.2f}s")
            dtype = "float" if args.dry_run else "bf16"
            say(f"kernel: {size}x{size} {dtype} matmul on {kernel.device_name}")
            # Warm both paths: connections, threads, the GPU's clocks.
            direct_round(kernel, args.concurrency, 1.0)
            router_round(url, args.concurrency, 1.0)
            direct, router, ratios = [], [], []
            for i in range(args.rounds):
                d = direct_round(kernel, args.concurrency, args.seconds)
                r, bad = router_round(url, args.concurrency, args.seconds)
                direct.append(d)
                router.append(r)
                ratios.append(r / d)
                say(f"  round {i + 1}: direct {d:9.0f} req/s   router {r:9.0f} req/s   "
                    f"ratio {r / d:.3f}   non-200 {bad}")  # fmt: skip
            say(f"median: direct {statistics.median(direct):.0f} req/s, "
                f"router {statistics.median(router):.0f} req/s, "
                f"router/direct {statistics.median(ratios):.3f}")  # fmt: skip

    section("RESULT")
    say(f"OK: {'dry run on CPU' if args.dry_run else cold['device']}; cold start "
        f"{cold['launch_to_first_200_s']:.2f}s (setup {cold['setup_s']:.2f}s); router/direct "
        f"{statistics.median(ratios):.3f} at {args.concurrency} callers")  # fmt: skip
    for line in FORK_SUMMARY:
        say(f"OK: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
