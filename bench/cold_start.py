"""Cold start: time from a request at zero runners to its response (examples/echo.py::Echo).

A Platform runs in this process with a short keep_alive (0.5 s) and scheduler interval (0.05 s).
Each iteration waits until the app has no runner at all, then times one POST through the router
until the response. In the same iteration, as a baseline, it times bare interpreter starts:
``python -c pass`` and ``python -c "import yurt.runner.server"`` (what every runner pays before
it can do anything). Medians over iterations.

The same app with ``requirements`` (``--requirements``, humanize by default), its environment
built before the first iteration, is timed in each iteration beside the one without: a warm
environment should add at most 30 ms. These two start fresh interpreters (``fork_runners =
False``); a third copy of the echo app has its runners forked from a warm template (templates
on, docs/cold-starts.md): at most 30 ms median is the target. With ``--heavy`` (numpy, scipy and
pandas by default; ``--heavy`` with no names skips it), bench/heavy_app.py::Heavy, whose module
imports them, is timed fresh and forked, its environment built first. Each runner's memory is read
from /proc/<pid>/smaps_rollup while it serves: RSS, PSS and USS (private pages: what a forked
runner adds to its template). First, the environment's first build is timed with pip
and with uv (when installed), each into a new directory with empty installer caches and again
with the caches that build filled, packages coming from this machine's pip configuration.

    .venv/bin/python bench/cold_start.py [--iterations 7] [--warmup 1] [--build-rounds 3] \
        [--heavy numpy scipy pandas]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from yurt.config import EnvsConfig, RouterConfig, SchedulerConfig, ServerConfig
from yurt.envs import Environments, install_steps
from yurt.envs_installer import find_uv
from yurt.loader import load_app
from yurt.logging import configure
from yurt.platform import Platform
from yurt.router.pool import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5
FORK_TARGET_S = 0.030  # the median cold start with templates on
ENV_TARGET_S = 0.030  # what a warm environment may add to the median cold start
KEEP_ALIVE = 0.5
BODY = json.dumps({"prompt": "a yurt on the steppe"}).encode()
HEADERS = [(b"content-type", b"application/json")]
# The same import without interpreter teardown, which a runner only pays when it stops.
IMPORT_NO_TEARDOWN = "import os, yurt.runner.server; os._exit(0)"
LOG_LINE = re.compile(r"^(\S+?Z?)\s+\[\w+\s*\]\s+(runner_listening|runner_ready)\b")


def cold_echo(requirements: list[str] | None = None, *, fork: bool = False) -> type[Any]:
    """examples/echo.py::Echo with keep_alive=0.5 and no warm runner, fresh interpreters unless
    ``fork`` (then ``echo-fork``); with ``requirements``, an app of its own (``echo-env``)
    started from their environment."""
    echo = load_app(str(ROOT / "examples/echo.py::Echo"))

    class ColdEcho(echo, keep_alive=KEEP_ALIVE, min_concurrency=0, fork_runners=fork):  # type: ignore[valid-type,misc]
        # The payload pickles the class's module by value; keeping Echo's module makes both
        # classes travel by value (this script's own module is not importable on a runner).
        __module__ = echo.__module__
        app_name = "echo-fork" if fork else "echo"

    if requirements:

        class EnvEcho(ColdEcho):
            __module__ = echo.__module__
            app_name = "echo-env"

        EnvEcho.requirements = list(requirements)
        return EnvEcho
    return ColdEcho


def heavy_app(requirements: list[str], *, fork: bool) -> type[Any]:
    """bench/heavy_app.py::Heavy with ``requirements``, forked from a template or fresh."""
    heavy = load_app(str(ROOT / "bench/heavy_app.py::Heavy"))

    class ColdHeavy(heavy, min_concurrency=0, fork_runners=fork):  # type: ignore[valid-type,misc]
        __module__ = heavy.__module__
        app_name = "heavy-template" if fork else "heavy-fresh"

    ColdHeavy.requirements = list(requirements)
    return ColdHeavy


def cpu_seconds(pid: int) -> float:
    """The CPU time ``pid``'s threads alive now have used (for a forked runner: since its fork;
    setup() runs in a worker thread, which lives on), from their schedstat, in seconds: barely
    moved by what else the machine runs."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return float("nan")
    return total / 1e9


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of ``pid`` in MiB, from smaps_rollup."""
    fields: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {"rss": float("nan"), "pss": float("nan"), "uss": float("nan")}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[name] = int(rest.split()[0]) / 1024
    uss = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    return {"rss": fields.get("Rss", 0.0), "pss": fields.get("Pss", 0.0), "uss": uss}


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


def cpu_exec(*argv: str) -> float:
    """The CPU time (user + system) ``argv`` took, from its own rusage: unlike the wall
    clock, barely moved by what else the machine runs."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


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
    steps = [args.requirements]
    plain = cold_echo()
    apps = {
        "no requirements": plain,
        "warm environment": cold_echo(args.requirements),
        "templates on": cold_echo(fork=True),
    }
    if args.heavy:
        apps["heavy, fresh"] = heavy_app(args.heavy, fork=False)
        apps["heavy, template"] = heavy_app(args.heavy, fork=True)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
    base: dict[str, list[float]] = {
        k: [] for k in ("pass", "import", "noexit", "env_noexit", "cpu", "env_cpu")
    }
    seen_pids: list[int] = []
    with tempfile.TemporaryDirectory(prefix="yurt-cold-") as tmp:
        builds = await time_builds(steps, Path(tmp), args.build_rounds)
        config = ServerConfig(
            data_dir=Path(tmp) / "data",
            router=RouterConfig(port=0),
            scheduler=SchedulerConfig(interval=0.05),
        )
        # The warm case: its environment is built before the first request, as a deploy does.
        envs = Environments(config.data_dir / "envs", config.envs)
        env_python = str(await asyncio.to_thread(envs.ensure, steps))
        if args.heavy:
            await asyncio.to_thread(envs.ensure, install_steps(args.heavy))
        template_memory: list[dict[str, float]] = []
        platform = Platform(config)
        pool: ConnectionPool | None = None
        try:
            await platform.start()
            ids = {name: await platform.add_app(cls) for name, cls in apps.items()}
            healthy_at = watch_healthy(platform)
            host, port = platform.url.removeprefix("http://").rsplit(":", 1)
            pool = ConnectionPool(host, int(port))
            print_config(args, plain, ids)
            # Templates start ahead of demand, at add_app: the benchmark waits for them.
            want = 2 if args.heavy else 1
            templates = platform.backend.templates
            await wait_for(
                lambda: len(templates.pids()) >= want and templates.settled(), 120, "templates"
            )
            for i in range(args.warmup + args.iterations):
                warm = i < args.warmup
                line = [f"  {'warmup' if warm else f'iter {i - args.warmup + 1}'}:"]
                await wait_for(lambda: all_idle(platform, ids), 30, "zero runners")
                for key, t in (await baselines(env_python)).items():
                    if not warm:
                        base[key].append(t)
                # Interleaved, and in turns first, so both see the same machine.
                for name, app_id in sorted(ids.items(), reverse=i % 2 == 1):
                    await wait_for(lambda a=app_id: no_runner(platform, a), 30, "zero runners")
                    row = await cold_start(platform, pool, app_id, healthy_at, config.data_dir)
                    seen_pids.append(int(row.pop("pid")))
                    if not warm:
                        rows[name].append(row)
                    line.append(f"{name} {row['total'] * 1000:6.1f} ms")
                line[1:] = sorted(line[1:])  # the same order on every line
                print("  ".join(line), flush=True)
            pids = platform.backend.templates.pids().values()
            template_memory = [memory_mib(pid) for pid in pids]
        finally:
            if pool is not None:
                await pool.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(platform.stop(grace=1.0), 30)
            for pid in seen_pids:  # belt and braces: runners live in sessions of their own
                if pid and is_runner(pid):
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)

    report(rows, base, builds, args.requirements)
    report_templates(rows, template_memory, args.heavy)
    return 0


def all_idle(platform: Platform, ids: dict[str, str]) -> bool:
    return all(no_runner(platform, app_id) for app_id in ids.values())


def no_runner(platform: Platform, app_id: str) -> bool:
    return not platform.backend.runners(app_id) and not platform.registry.healthy(app_id)


def watch_healthy(platform: Platform) -> dict[str, float]:
    """When each runner became healthy, on the monotonic clock."""
    healthy_at: dict[str, float] = {}
    set_healthy = platform.registry.set_healthy

    def record(app: str, endpoint: Any) -> None:
        healthy_at.setdefault(endpoint.runner_id, time.monotonic())
        set_healthy(app, endpoint)

    platform.registry.set_healthy = record  # type: ignore[method-assign,assignment]
    return healthy_at


async def baselines(env_python: str) -> dict[str, float]:
    """Bare interpreter starts, in the same conditions (no runner alive yet); the runner's
    import from yurt's interpreter and from the warm environment's, back to back."""
    out = {
        "pass": await timed_exec(sys.executable, "-c", "pass"),
        "import": await timed_exec(sys.executable, "-c", "import yurt.runner.server"),
        "noexit": await timed_exec(sys.executable, "-c", IMPORT_NO_TEARDOWN),
        "env_noexit": await timed_exec(env_python, "-c", IMPORT_NO_TEARDOWN),
        "cpu": await asyncio.to_thread(cpu_exec, sys.executable, "-c", IMPORT_NO_TEARDOWN),
        "env_cpu": await asyncio.to_thread(cpu_exec, env_python, "-c", IMPORT_NO_TEARDOWN),
    }
    await asyncio.sleep(0.05)  # let the reaped processes' exit settle
    return out


async def cold_start(
    platform: Platform,
    pool: ConnectionPool,
    app_id: str,
    healthy_at: dict[str, float],
    data_dir: Path,
) -> dict[str, float]:
    """One POST at zero runners, timed to its response, with the runner's stages."""
    wall_to_mono = time.time() - time.monotonic()
    t0 = time.monotonic()
    reply = await pool.request(b"POST", f"/{app_id}".encode(), HEADERS, BODY, 60.0)
    t1 = time.monotonic()
    if reply.status != 200 or b"echo" not in reply.body:
        raise RuntimeError(f"unexpected reply {reply.status} {reply.body[:200]!r}")
    views = platform.backend.runners(app_id)
    if len(views) != 1:
        raise RuntimeError(f"expected one runner, found {views}")
    view = views[0]
    memory = memory_mib(view.pid or 0)
    cpu = cpu_seconds(view.pid or 0)
    logs = runner_log_times(data_dir / "logs", view.runner_id, wall_to_mono)
    return {
        "total": t1 - t0,
        "spawn": view.started_at - t0,
        "healthy": healthy_at.get(view.runner_id, float("nan")) - t0,
        "listening": logs.get("runner_listening", float("nan")) - t0,
        "ready": logs.get("runner_ready", float("nan")) - t0,
        "pid": float(view.pid or 0),
        "cpu": cpu,
        **memory,
    }


async def time_builds(steps: list[list[str]], tmp: Path, rounds: int) -> dict[str, list[float]]:
    """First builds of the environment with each installer, alternating: into a new root with
    empty installer caches, then into another root with the caches the first filled."""
    installers: list[Literal["pip", "uv"]] = ["pip"]
    if find_uv(sys.executable):
        installers.append("uv")
    times: dict[str, list[float]] = {}
    saved = {k: os.environ.get(k) for k in ("PIP_CACHE_DIR", "UV_CACHE_DIR")}
    try:
        for r in range(rounds):
            for installer in installers:
                cache = tmp / f"cache-{installer}-{r}"
                os.environ["PIP_CACHE_DIR"] = os.environ["UV_CACHE_DIR"] = str(cache)
                for kind in ("empty", "warm"):
                    root = tmp / f"build-{installer}-{r}-{kind}"
                    envs = Environments(root, EnvsConfig(installer=installer))
                    t0 = time.perf_counter()
                    await asyncio.to_thread(envs.ensure, steps)
                    took = time.perf_counter() - t0
                    times.setdefault(f"{installer}, {kind} installer cache", []).append(took)
                    shutil.rmtree(root)
                    print(f"  build {r + 1}: {installer}, {kind} cache: {took:.2f} s", flush=True)
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return times


def ms(x: float) -> str:
    return f"{x * 1000:7.1f}"


def report(
    rows: dict[str, list[dict[str, float]]],
    base: dict[str, list[float]],
    builds: dict[str, list[float]],
    requirements: list[str],
) -> None:
    med = statistics.median
    plain = [r["total"] for r in rows["no requirements"]]
    warm = [r["total"] for r in rows["warm environment"]]
    n = len(plain)
    print(f"\ncold start, {n} iterations (ms):{'median':>27} {'min':>7} {'max':>7}")
    lines = [
        ("request -> response, no requirements", plain),
        (f"request -> response, warm environment ({' '.join(requirements)})", warm),
        ("baseline: python -c pass", base["pass"]),
        ('baseline: python -c "import yurt.runner.server"', base["import"]),
        ("baseline: same import, then os._exit(0) (no teardown)", base["noexit"]),
        ("baseline: the same from the warm environment's python", base["env_noexit"]),
        ("baseline: CPU time of import+_exit, yurt's python", base["cpu"]),
        ("baseline: CPU time of import+_exit, env's python", base["env_cpu"]),
    ]
    for label, xs in lines:
        print(f"  {label:<55}{ms(med(xs))} {ms(min(xs))} {ms(max(xs))}")
    print(f"\nfirst build of the environment ({' '.join(requirements)}), seconds:")
    for label, xs in builds.items():
        print(f"  {label:<55}{med(xs):7.2f} {min(xs):7.2f} {max(xs):7.2f}")
    if not builds:
        print("  not timed (--build-rounds 0)")
    elif not any(k.startswith("uv") for k in builds):
        print("  uv: not installed here (pip install uv), not measured")
    for name, label in (
        ("no requirements", ""),
        ("warm environment", ", warm environment"),
        ("templates on", ", templates on"),
    ):
        print(f"\nwhere the time goes{label} (median ms since the request; stage = difference):")
        stages(rows[name])
    verdict = "PASS" if med(plain) <= TARGET_S else "MISS"
    print(f"\ntarget: median cold start <= {TARGET_S} s: {med(plain):.3f} s  {verdict}")
    added = med(warm) - med(plain)
    # Paired: each iteration's two cold starts ran back to back, on the same load.
    paired = med([w - p for w, p in zip(warm, plain, strict=True)])
    imports = med([e - p for e, p in zip(base["env_noexit"], base["noexit"], strict=True)])
    cpu = med([e - p for e, p in zip(base["env_cpu"], base["cpu"], strict=True)])
    verdict = "PASS" if added <= ENV_TARGET_S else "MISS"
    print(
        f"target: a warm environment adds <= {ENV_TARGET_S * 1000:.0f} ms to the median: "
        f"{added * 1000:+.1f} ms  {verdict}\n"
        f"  median of the per-iteration differences: {paired * 1000:+.1f} ms; the runner's "
        f"import from the environment's python, against yurt's: {imports * 1000:+.1f} ms "
        f"(CPU time: {cpu * 1000:+.1f} ms)"
    )
    floor = med(base["noexit"])
    print(
        f"  interpreter start + yurt.runner.server import (no teardown) ~{floor:.3f} s"
        f" = {100 * floor / med(plain):.0f}% of the median cold start"
    )
    print(
        "\nreproduce: .venv/bin/python "
        + " ".join(shlex.quote(a) for a in ["bench/cold_start.py", *sys.argv[1:]])
    )


def report_templates(
    rows: dict[str, list[dict[str, float]]], templates: list[dict[str, float]], heavy: list[str]
) -> None:
    """Templates on against off, the echo app and the heavy one, and what each runner holds."""
    med = statistics.median
    print("\ntemplates (median ms; ratio = off / on, each iteration's pair back to back):")
    pairs = [("templates on", "no requirements", "echo")]
    if heavy:
        pairs.append(("heavy, template", "heavy, fresh", f"heavy ({' '.join(heavy)})"))
    for on, off, label in pairs:
        a, b = [r["total"] for r in rows[on]], [r["total"] for r in rows[off]]
        ratio = med([y / x for x, y in zip(a, b, strict=True)])
        print(
            f"  {label:<40} on {ms(med(a))}  off {ms(med(b))}  ratio {ratio:5.1f}x"
            f"  (on: min {ms(min(a))}, max {ms(max(a))})"
        )
    print("  the runner's own CPU time until its first response (median ms; load-independent):")
    for name in ("no requirements", "templates on", "heavy, fresh", "heavy, template"):
        if name in rows:
            print(f"    {name:<38}{ms(med([r['cpu'] for r in rows[name]]))}")
    echo_on = med([r["total"] for r in rows["templates on"]])
    verdict = "PASS" if echo_on <= FORK_TARGET_S else "MISS"
    print(
        f"target: echo cold start with templates on <= {FORK_TARGET_S * 1000:.0f} ms median: "
        f"{echo_on * 1000:.1f} ms  {verdict}"
    )
    print("\nmemory of each runner while it serves (median MiB): RSS, PSS, USS (its own pages)")
    for name, xs in rows.items():
        if name == "warm environment":
            continue
        rss, pss, uss = (med([r[k] for r in xs]) for k in ("rss", "pss", "uss"))
        print(f"  {name:<40} RSS {rss:7.1f}  PSS {pss:7.1f}  USS {uss:7.1f}")
    for memory in templates:
        print(
            f"  {'a template (idle)':<40} RSS {memory['rss']:7.1f}  PSS {memory['pss']:7.1f}  "
            f"USS {memory['uss']:7.1f}"
        )


def stages(rows: list[dict[str, float]]) -> None:
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
        at = statistics.median(values)
        print(f"  {label:<55} {ms(at)}  (+{(at - prev) * 1000:.1f})")
        prev = at


def print_config(args: argparse.Namespace, cls: type[Any], ids: dict[str, str]) -> None:
    import platform as pyplatform

    print("yurt cold start benchmark")
    print(f"  python {pyplatform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs")
    print(
        f"  apps {', '.join(ids.values())} (examples/echo.py::Echo, sync endpoint; the second "
        f"with requirements {args.requirements}, its environment built before), "
        f"keep_alive={cls.keep_alive}, min_concurrency={cls.min_concurrency}; scheduler interval "
        "0.05 s; health startup poll 0.01 s; platform and client in this process; packages "
        "from this machine's pip configuration",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=7, help="measured cold starts")
    p.add_argument("--warmup", type=int, default=1, help="cold starts run first and not counted")
    p.add_argument(
        "--requirements",
        nargs="+",
        default=["humanize>=4"],
        help="the warm environment's requirements, installed from this machine's pip "
        "configuration (default: humanize>=4)",
    )
    p.add_argument("--build-rounds", type=int, default=3, help="first builds timed per installer")
    p.add_argument(
        "--heavy",
        nargs="*",
        default=["numpy", "scipy", "pandas"],
        help="requirements of the heavy-imports app (bench/heavy_app.py), timed fresh and "
        "forked; none: not timed",
    )
    args = p.parse_args()
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
