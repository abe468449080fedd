"""Entry point: ``python -m yurt.runner (--payload PATH | --payload-url URL) --port N [--host H]``.

With ``--payload-url`` (a runner on a cluster) the payload is downloaded with the bearer token in
``$YURT_PAYLOAD_TOKEN`` and must have the digest ``--payload-sha256``.

Before the user's code runs, ``NVIDIA_VISIBLE_DEVICES`` (Nomad's GPUs) becomes
``CUDA_VISIBLE_DEVICES``, and a GPU app's visible GPUs are checked against its machine types and
``num_gpus`` (``yurt.runner.gpus``); a CPU app never loads NVML.

Exit codes: 0 after a graceful stop, 2 bad arguments, 3 payload could not be loaded,
4 setup failed, 5 setup timed out, 6 the GPUs do not match the app. On 3-6 the last stderr line
starts with ``FAILURE_MARK`` so that whoever started the runner can tell the caller why
(``yurt.runner.contract`` names them for both sides).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import structlog

from yurt.aio import LOOP_NAMES, run
from yurt.errors import PayloadError, SchedulingError
from yurt.logging import configure
from yurt.packaging import unpack
from yurt.runner.contract import (  # the control plane reads these from contract.py
    EXIT_GPU,
    EXIT_PAYLOAD,
    EXIT_SETUP,
    EXIT_STARTUP_TIMEOUT,
    failure_line,
)
from yurt.spec import TEARDOWN_SLACK_S

if TYPE_CHECKING:
    from yurt.app import App
    from yurt.packaging import PayloadHeader
    from yurt.runner.gpus import GpuMonitor
    from yurt.runner.server import RunnerServer
    from yurt.spec import AppSpec

log = structlog.get_logger("yurt.runner")

# Payloads a template (``yurt.runner.template``) unpickled before it forked this runner, by path
# (a payload's file is named by its digest): not unpickled again.
PRELOADED: dict[str, tuple[PayloadHeader, type[App]]] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The runner's command line."""
    p = argparse.ArgumentParser(prog="python -m yurt.runner")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--payload", type=Path, help="path of the payload file")
    source.add_argument("--payload-url", help="download the payload from the yurt server")
    p.add_argument("--payload-sha256", help="digest the downloaded payload must have")
    p.add_argument("--port", required=True, type=int)
    p.add_argument(
        "--fd",
        type=int,
        default=-1,
        help="listen on this inherited socket, already bound to --port (no race for the port)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--runner-id", default="")
    p.add_argument(
        "--parent-pid", type=int, default=0, help="drain and exit when this process is gone"
    )
    p.add_argument(
        "--parent-pidfd",
        type=int,
        default=-1,
        help="an inherited pidfd of --parent-pid, where that is not our parent (a runner forked "
        "from a template)",
    )
    p.add_argument("--loop", choices=LOOP_NAMES, default="auto")
    p.add_argument(
        "--kill-after",
        type=float,
        default=TEARDOWN_SLACK_S,
        help="seconds after the grace period before the supervisor sends SIGKILL",
    )
    p.add_argument(
        "--machines",
        default=None,
        metavar="JSON",
        help="the server's changes to the machine catalog, e.g. "
        '\'{"GPU-H100": {"gpu_memory_mib": 80000}}\'',
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=["console", "json"], default="console")
    args = p.parse_args(argv)
    if args.payload_url is not None and not args.payload_sha256:
        p.error("--payload-url needs --payload-sha256")
    return args


def read_payload(args: argparse.Namespace) -> bytes:
    """The payload bytes, from the file or the server; raises ``PayloadError`` or ``OSError``."""
    if args.payload is not None:
        data: bytes = args.payload.read_bytes()
        return data
    from yurt.runner.fetch import TOKEN_ENV, fetch_payload

    token = os.environ.get(TOKEN_ENV, "")
    return fetch_payload(args.payload_url, token, args.payload_sha256)


def fail(code: int, kind: str, message: str) -> int:
    """Report a failure on the last stderr line and return the exit code."""
    sys.stderr.write(failure_line(kind, message))
    sys.stderr.flush()
    return code


async def serve(args: argparse.Namespace) -> int:
    """Load, listen, set up, serve until SIGTERM/SIGINT, drain."""
    from yurt.runner import logcapture  # after argument errors, keep --help fast
    from yurt.runner.gpus import map_visible_devices
    from yurt.runner.server import RunnerServer
    from yurt.runner.token import take_token

    # Before the payload is unpickled: user code may initialise CUDA as it is imported, and
    # must not find the runner's token in its environment.
    map_visible_devices(os.environ)
    token = take_token(os.environ)
    try:
        header, cls = PRELOADED.get(str(args.payload)) or unpack(read_payload(args))
    except (OSError, PayloadError) as exc:
        return fail(EXIT_PAYLOAD, "payload", str(exc))
    server = RunnerServer(
        header,
        cls,
        host=args.host,
        port=args.port,
        runner_id=args.runner_id,
        fd=args.fd,
        kill_after=args.kill_after,
        settle_heap=True,
        token=token,
    )
    if server.spec.num_gpus > 0:
        try:
            server.gpus = check_gpus(server.spec, args.machines)
        except (SchedulingError, ValueError) as exc:
            return fail(EXIT_GPU, "gpu", str(exc))
    # After configure(): the runner's own structlog output is bound to the original stderr.
    logcapture.install()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    watchdog = asyncio.ensure_future(_watch_parent(args.parent_pid, args.parent_pidfd, stop))
    setup = asyncio.ensure_future(server.run_setup())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({setup, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failure = await _after_setup(server, setup, stopper)
    stopper.cancel()
    watchdog.cancel()
    await server.drain()
    server.shutdown_executors()
    # Last, so that the failure line is the last line of the log.
    return fail(*failure) if failure is not None else 0


async def _after_setup(
    server: RunnerServer, setup: asyncio.Task[None], stopper: asyncio.Task[Literal[True]]
) -> tuple[int, str, str] | None:
    """Serve until told to stop once ``setup()`` succeeded; its failure, if it failed (the
    runner then drains and exits with it); a stop during setup cancels it."""
    if not setup.done():
        setup.cancel()
        return None
    error = setup.exception()
    if error is None:
        await stopper
        return None
    server.state = "failed"
    if isinstance(error, TimeoutError):
        timeout = server.spec.startup_timeout
        detail = f"setup() did not finish within startup_timeout={timeout:g}s"
        return EXIT_STARTUP_TIMEOUT, "startup_timeout", detail
    traceback.print_exception(error)
    return EXIT_SETUP, "setup", f"setup() raised {type(error).__name__}: {error}"


def check_gpus(spec: AppSpec, machines: str | None = None) -> GpuMonitor:
    """The runner's GPUs, checked against its app; raises ``SchedulingError`` on a mismatch.

    ``machines``: the server's catalog changes as JSON (``--machines``); ``ValueError`` if bad.
    """
    from yurt.machines import with_overrides
    from yurt.runner.gpus import load_nvml, probe

    catalog = with_overrides(json.loads(machines) if machines else {})
    monitor = probe(spec.machine_types, spec.num_gpus, os.environ, load_nvml(), catalog)
    log.info("runner_gpus", gpus=[g.as_dict() for g in monitor.gpus])
    return monitor


def parent_gone(parent_pid: int, pidfd: int = -1) -> bool:
    """Whether the supervisor ``parent_pid`` is gone. A fresh runner's parent is its supervisor:
    gone once our parent changed. A forked runner's parent is its template, so it is given a
    pidfd of its supervisor, which polls readable once that process has exited."""
    if pidfd >= 0:
        return bool(select.select([pidfd], [], [], 0)[0])
    return os.getppid() != parent_pid


async def _watch_parent(parent_pid: int, pidfd: int, stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone, so a killed supervisor leaves no runner."""
    if parent_pid <= 0:
        return
    # There is no event for "my parent died" short of prctl; a one-second poll is cheap.
    while not parent_gone(parent_pid, pidfd):  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    stop.set()


def main(argv: list[str] | None = None) -> None:
    """Run the runner; exits the process."""
    args = parse_args(argv)
    configure(args.log_level, args.log_format)
    code = 1
    try:
        code = run(serve(args), args.loop)
    except BaseException:
        # Whatever ended it, it still ends below: a normal interpreter exit would join the
        # threads stuck in user code (a setup() that never returns) and wait on them for ever.
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        orphaned = args.parent_pid > 0 and parent_gone(args.parent_pid, args.parent_pidfd)
        if orphaned and os.getpgrp() == os.getpid():
            # Orphaned (the supervisor was killed, so nobody will clean up our session): take
            # whatever the app started (model servers, worker pools holding GPUs) with us.
            os.killpg(os.getpgrp(), signal.SIGKILL)
        # Threads stuck in user code past the grace period must not keep the process alive.
        os._exit(code)


if __name__ == "__main__":
    main()
