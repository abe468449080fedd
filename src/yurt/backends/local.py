"""The embedded backend: each runner is a subprocess of this process on a free port.

It plays the parts that Nomad and Consul play on a cluster: it keeps the target number of runners
alive, health-checks them over HTTP (interval, timeout, failure threshold), replaces a runner that
was ready and died at once while ``min_concurrency`` needs it, and backs off an app whose runners
keep failing before they become ready. Healthy runners are published to a ``LocalRegistry``.
Each runner's output comes through a pipe to its log file and, with ``console``, to stderr
(``runnerlog``).

A GPU runner gets GPUs of its own through ``CUDA_VISIBLE_DEVICES`` (NVML UUIDs), held until its
process has exited; while too few are free, further runners of the app wait rather than share.
A GPU app this machine cannot serve at all fails at ``ensure_app``. CPU runners see no GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from yurt.appdata import app_data_path
from yurt.backends.base import (
    FailureListener,
    KeepListener,
    RunnerEndpoint,
    RunnerState,
    RunnerView,
    StartFailure,
    Unplaceable,
)
from yurt.backends.gpus import GpuAllocator, discover_gpus
from yurt.backends.health import HttpHealthChecker
from yurt.backends.localproc import bound_socket, runner_command, runner_env
from yurt.backends.runnerlog import Console, RunnerOutput, failure_from_tail
from yurt.backends.template_pool import TemplatePool
from yurt.backends.templates import ForkedProcess, TemplateRefused
from yurt.config import EnvsConfig, LocalBackendConfig
from yurt.discovery.local import LocalRegistry
from yurt.envs import BuildCancelled, Environments
from yurt.errors import ConfigError, EnvironmentBuildError
from yurt.machines import with_overrides
from yurt.privatefs import private_dir
from yurt.runner.contract import RUNNER_TOKEN_ENV
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.local")

LIVE = (RunnerState.PENDING, RunnerState.SETUP, RunnerState.IDLE, RunnerState.RUNNING)


@dataclass(eq=False)
class _Runner:
    runner_id: str
    app_id: str
    port: int
    log_path: Path
    started_at: float
    state: RunnerState = RunnerState.PENDING
    sock: socket.socket | None = None  # bound for the runner, closed here once it has it
    proc: asyncio.subprocess.Process | ForkedProcess | None = None  # forked: from a template
    output: RunnerOutput | None = None  # its stdout and stderr, once it runs
    ready: bool = False
    outdated: bool = False  # of an earlier revision: serves until a new one takes its place
    detail: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Only the router, which gets it with the runner's endpoint, may call the runner.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


@dataclass(eq=False)
class _App:
    app_id: str
    spec: AppSpec
    payload: Path
    target: int = 0
    failures: int = 0
    backoff_until: float = 0.0
    last_failure: str = ""
    runners: dict[str, _Runner] = field(default_factory=dict)
    wakeup: asyncio.TimerHandle | None = None


def _first_to_go(runner: _Runner) -> tuple[bool, bool, float]:
    """Which old runner stops first: not ready yet (it serves no one), then idle, the oldest."""
    return runner.ready, runner.state == RunnerState.RUNNING, runner.started_at


def _replaced_at_once(app: _App) -> bool:
    """Whether a ready runner of ``app`` that died is replaced at once, even while others back
    off: while ``min_concurrency`` needs it (or the target is met without it: nothing starts)."""
    live = sum(r.state in LIVE and not r.outdated for r in app.runners.values())
    return live < app.spec.min_concurrency or app.target <= live


def _preload(app: _App) -> tuple[list[str], str | None]:
    """What the app's template imports: its ``preload``, or else its payload, unpickled."""
    if app.spec.preload is not None:
        return list(app.spec.preload), None
    return [], str(app.payload)


def _close_socket(runner: _Runner) -> None:
    if runner.sock is not None:
        runner.sock.close()
        runner.sock = None


class LocalBackend:
    """Runs runners as local subprocesses (a ``Backend``)."""

    def __init__(
        self,
        config: LocalBackendConfig,
        registry: LocalRegistry,
        log_dir: Path,
        *,
        gpus: GpuAllocator | None = None,
        machines: Mapping[str, Mapping[str, Any]] | None = None,
        console: BinaryIO | None = None,
        app_data: Path | None = None,
        secrets: Callable[[], Mapping[str, str]] | None = None,
        envs: Environments | None = None,
        files: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.config = config
        # Where each app's persistent data directory lives (``<owner>/<app>`` below it); None
        # gives runners none.
        self.app_data = app_data
        # The server's secrets, read at each runner's start: a change reaches runners started
        # after it.
        self.secrets = secrets
        # Where runners write toolkit outputs (``yurt.files.location``), read at each start.
        self.files = files
        # Where runners of apps with requirements get their interpreter.
        self.envs = envs or Environments(log_dir.parent / "envs", EnvsConfig(), config.python)
        if console is None and config.console:
            console = sys.stderr.buffer
        # Where runner output is shown as it comes, each line prefixed with the runner id.
        self.console = Console(console) if console is not None else None
        # The server's changes to the machine catalog: for the GPU assignment here, and passed
        # to each runner for its own GPU check.
        self.machines = dict(machines or {})
        self.catalog = with_overrides(self.machines)
        self.registry = registry
        self.log_dir = log_dir
        self._apps: dict[str, _App] = {}
        self._listeners: list[FailureListener] = []
        self.health = HttpHealthChecker(config.health)
        self._stopping = False
        # The GPUs runners may use; None until the first GPU app asks NVML.
        self.gpus = gpus
        # Warm interpreters that fork runners (docs/cold-starts.md).
        self.templates = TemplatePool(log_dir, config.template_start_timeout)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the health checker's HTTP session."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await self.health.start()

    async def stop(self, grace: float | None = None) -> None:
        """Stop every runner and wait until each process has exited."""
        self._stopping = True
        self.envs.close()  # a build under way would hold the stop for minutes
        runners = [r for a in self._apps.values() for r in a.runners.values()]
        for app in self._apps.values():
            if app.wakeup is not None:
                app.wakeup.cancel()
        for r in runners:
            if r.state != RunnerState.TERMINATED:
                self._terminate(r, "shutdown", grace=grace)
        # Each runner's first task ends only after its process has exited (or failed to start),
        # including runners whose process was still being spawned.
        await asyncio.gather(*(r.tasks[0] for r in runners if r.tasks), return_exceptions=True)
        for r in runners:
            for t in r.tasks[1:]:
                t.cancel()
        await self.templates.close()  # after the runners: each reports its runners' exits
        await self.health.close()
        if self.console is not None:
            await asyncio.to_thread(self.console.close)

    # -- Backend protocol ------------------------------------------------------------------

    async def ensure_app(self, app_id: str, spec: AppSpec, payload: Path) -> None:
        """Register (or update) an app; existing runners keep their revision until replaced.

        Raises ``SchedulingError`` for a GPU app whose GPUs this machine does not have.
        """
        if spec.num_gpus > 0:
            if self.gpus is None:
                # Once: NVML lists the same GPUs until the driver reloads.
                found = await asyncio.to_thread(discover_gpus, self.config.gpus, self.catalog)
                self.gpus = self.gpus or found
                log.info("gpus_found", gpus=[g.as_dict() for g in found.gpus], why=found.why_none)
            self.gpus.check(app_id, spec.machine_types, spec.num_gpus)
        app = self._apps.get(app_id)
        if app is None:
            app = self._apps[app_id] = _App(app_id, spec, payload)
        else:
            app.spec, app.payload = spec, payload
        self._warm_template(app)

    async def set_target(self, app_id: str, count: int) -> None:
        """Keep ``count`` runners alive."""
        app = self._apps[app_id]
        if count != app.target:
            log.info("target_changed", app=app_id, old=app.target, new=count)
        app.target = count
        self._reconcile(app)

    def target(self, app_id: str) -> int:
        """The runner count last asked for."""
        return self._apps[app_id].target

    async def stop_runner(self, app_id: str, runner_id: str, *, reason: str, replace: bool) -> None:
        """Drain and stop one runner; without ``replace`` the target drops by one."""
        app = self._apps.get(app_id)
        runner = app.runners.get(runner_id) if app else None
        if app is None or runner is None or runner.state not in LIVE:
            return
        if not replace:
            app.target = max(0, app.target - 1)
        self._terminate(runner, reason)
        self._reconcile(app)

    async def remove_app(self, app_id: str) -> None:
        """Stop every runner of the app with its grace period, wait until each process has
        exited (and given its GPUs back), and forget the app.

        With a target of 0 nothing starts again: a runner that exits now is not replaced,
        and one still being spawned is told to stop once it runs.
        """
        app = self._apps.get(app_id)
        if app is None:
            return
        app.target = 0
        if app.wakeup is not None:
            app.wakeup.cancel()
            app.wakeup = None
        runners = list(app.runners.values())
        for r in runners:
            self._terminate(r, "undeployed")
        # As in stop(): a runner's first task ends once its process has exited.
        await asyncio.gather(*(r.tasks[0] for r in runners if r.tasks), return_exceptions=True)
        if self._apps.get(app_id) is app:
            del self._apps[app_id]
            self.templates.drop_app(app_id)
        log.info("app_removed", app=app_id, runners=len(runners))

    async def roll(self, app_id: str) -> None:
        """Replace the app's runners with runners of its revision now (``ensure_app`` took it).

        A surge: each old runner serves until a new one is ready to take its place, so a
        redeploy never leaves the app with fewer ready runners, and one whose runners cannot
        start leaves the old ones serving. Where GPUs are short, old runners go one at a time
        to make room.
        """
        app = self._apps.get(app_id)
        if app is None:
            return
        old = [r for r in app.runners.values() if r.state in LIVE]
        for r in old:
            r.outdated = True
        if old:
            log.info("rollout_started", app=app_id, runners=len(old))
        self._reconcile(app)

    def pick_stops(self, app_id: str, idle: Sequence[str]) -> list[str]:
        """The scheduler's choice: any local runner can be stopped on its own."""
        return list(idle)

    def runners(self, app_id: str) -> list[RunnerView]:
        """Live runners, plus one CRASH_BACKOFF entry while the app is backing off."""
        app = self._apps.get(app_id)
        if app is None:
            return []
        views = [
            RunnerView(
                r.runner_id,
                app_id,
                r.state,
                self.config.host,
                r.port,
                r.proc.pid if r.proc else None,
                r.started_at,
                r.detail,
            )
            for r in app.runners.values()
        ]
        if app.backoff_until > time.monotonic():
            views.append(RunnerView.backoff(app_id, app.backoff_until, app.last_failure))
        return views

    def unplaced(self, app_id: str) -> Unplaceable | None:
        """Always None: a GPU app this machine cannot serve is refused when added."""
        return None

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Be told when a runner fails before it became ready."""
        self._listeners.append(listener)

    def add_keep_listener(self, listener: KeepListener) -> None:
        """Never called here: a local stop is carried out at once."""

    # -- reconciling -----------------------------------------------------------------------

    def _reconcile(self, app: _App, *, replace_now: bool = False) -> None:
        """Start or stop runners to meet the target; ``replace_now`` skips crash backoff once.

        Runners of an earlier revision do not count towards the target; they stop as runners of
        the current one become ready (``roll``).
        """
        if self._stopping:
            return
        self._fill(app, replace_now)
        old = [r for r in app.runners.values() if r.state in LIVE and r.outdated]
        if old:
            ready = sum(
                r.state in LIVE and r.ready and not r.outdated for r in app.runners.values()
            )
            old.sort(key=_first_to_go)
            for r in old[: max(0, ready + len(old) - app.target)]:
                self._terminate(r, "new_revision")

    def _fill(self, app: _App, replace_now: bool) -> None:
        live = [r for r in app.runners.values() if r.state in LIVE and not r.outdated]
        missing = app.target - len(live)
        if missing > 0 and replace_now:
            if not self._spawn(app):
                self._make_room(app)
                return
            missing -= 1
        if missing > 0:
            wait = app.backoff_until - time.monotonic()
            if wait > 0:
                if app.wakeup is None:
                    app.wakeup = asyncio.get_running_loop().call_later(wait, self._wake, app)
                return
            for _ in range(missing):
                if not self._spawn(app):
                    self._make_room(app)
                    return
        elif missing < 0:
            # Not-ready runners first (newest first): they serve no one yet.
            extra = sorted(live, key=lambda r: (r.ready, -r.started_at))[:-missing]
            for r in extra:
                self._terminate(r, "scale_down")

    def _make_room(self, app: _App) -> None:
        """No GPUs for a runner of the current revision: an old runner of the app gives up its
        GPUs, one at a time (its exit brings the next reconcile)."""
        runners = app.runners.values()
        if any(r.outdated and r.state == RunnerState.DRAINING for r in runners):
            return  # one is giving its GPUs up already
        if any(not r.outdated and r.state in LIVE and not r.ready for r in runners):
            return  # the last one made room for is still starting: one old runner per new one
        old = sorted((r for r in runners if r.outdated and r.state in LIVE), key=_first_to_go)
        if old:
            self._terminate(old[0], "new_revision")

    def _wake(self, app: _App) -> None:
        app.wakeup = None
        self._reconcile(app)

    def _spawn(self, app: _App) -> bool:
        """Start one runner; False (and nothing started) while its GPUs are all taken."""
        runner_id = "r-" + uuid.uuid4().hex[:10]
        sock = bound_socket(self.config.host)  # before any GPU is taken: it may raise
        if app.spec.num_gpus > 0:
            spec, gpus = app.spec, self.gpus  # ensure_app has found them
            if gpus is None or gpus.acquire(runner_id, spec.machine_types, spec.num_gpus) is None:
                sock.close()
                log.info(
                    "runner_waits_for_gpus", app=app.app_id, free=len(gpus.free if gpus else [])
                )
                return False
        safe = app.app_id.replace("/", "--")
        runner = _Runner(
            runner_id=runner_id,
            app_id=app.app_id,
            port=sock.getsockname()[1],
            log_path=self.log_dir / f"{safe}-{runner_id}.log",
            started_at=time.monotonic(),
            sock=sock,
        )
        app.runners[runner_id] = runner
        task = asyncio.create_task(self._run(app, runner))
        task.add_done_callback(lambda _: _close_socket(runner))  # even if it never ran
        runner.tasks.append(task)
        return True

    async def _run(self, app: _App, runner: _Runner) -> None:
        python = await self._interpreter(app, runner)
        if python is None:
            return
        fd = runner.sock.fileno() if runner.sock is not None else -1
        cmd = runner_command(
            self.config,
            app.payload,
            runner.runner_id,
            runner.port,
            fd,
            self.machines,
            python=python,
        )
        gpu_ids = self.gpus.uuids(runner.runner_id) if self.gpus is not None else []
        try:
            data = None
            if self.app_data is not None:
                # Private as the rest of the data dir: apps keep weights and user data there.
                data = private_dir(app_data_path(self.app_data, app.app_id))
            env = runner_env(os.environ, gpu_ids, self.config.pass_env, data)
            if self.files is not None:
                env |= self.files()
            shared = self._template_env(data)
            env[RUNNER_TOKEN_ENV] = runner.token
            if not self._add_secrets(app, runner, env):
                return
            runner.proc = await self._forked(app, runner, cmd, env, shared)
            if runner.proc is None:
                # A pipe, not the log file: a runner must not die of a full disk (runnerlog).
                runner.proc = await asyncio.create_subprocess_exec(
                    *cmd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    pass_fds=(runner.sock.fileno(),) if runner.sock is not None else (),
                )
        except (OSError, ValueError) as exc:  # ValueError: a data directory it cannot have
            app.runners.pop(runner.runner_id, None)
            runner.state = RunnerState.TERMINATED
            log.warning("runner_spawn_failed", app=app.app_id, command=cmd[0], error=str(exc))
            # The caller hears why without the server's paths (the console has the command).
            why = getattr(exc, "strerror", None) or type(exc).__name__
            self._start_failed(app, runner, "spawn", f"the runner process did not start: {why}")
            self._gone(app, runner)
            return
        finally:
            _close_socket(runner)  # the runner has its own copy now (or never will)
        output = runner.output = RunnerOutput(
            runner.runner_id, runner.log_path, self.console, app_id=app.app_id
        )
        assert runner.proc.stdout is not None
        pump = asyncio.create_task(output.pump(runner.proc.stdout))
        runner.tasks.append(pump)
        log.info(
            "runner_started",
            app=app.app_id,
            runner=runner.runner_id,
            pid=runner.proc.pid,
            forked=isinstance(runner.proc, ForkedProcess),
            port=runner.port,
            log=str(runner.log_path),
            gpus=gpu_ids or None,
        )
        if runner.state == RunnerState.DRAINING:  # stopped while the process was starting
            self._signal(runner, signal.SIGTERM)
        watch = asyncio.create_task(self._watch_health(app, runner))
        runner.tasks.append(watch)
        code = await runner.proc.wait()
        watch.cancel()
        # Whatever user code started (model servers, worker pools) goes with the runner.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(runner.proc.pid, signal.SIGKILL)
        # Its last lines (the failure line) may still be in the pipe. Not to the end: a process
        # that left the group can hold the pipe open; the pump then goes on until it closes.
        await asyncio.wait({pump}, timeout=self.config.health.timeout)
        self._exited(app, runner, code)

    # -- templates ---------------------------------------------------------------------------

    def _forks(self, app: _App) -> bool:
        return self.config.fork_runners and app.spec.fork_runners

    def _template_env(self, data: Path | None) -> dict[str, str]:
        """A template's environment: its runners', less what differs between runners (their
        GPUs, token and secrets: added in each child)."""
        env = runner_env(os.environ, [], self.config.pass_env, data)
        if self.files is not None:
            env |= self.files()
        return env

    def _warm_template(self, app: _App) -> None:
        """Start the app's template ahead of its first runner, with its preload imported:
        where its environment is built already (else its first runner starts it)."""
        if not self._forks(app):
            return
        python = self.config.python
        if app.spec.requirements:
            status = self.envs.status(app.spec.requirements)
            if status.state != "ready" or status.digest is None:
                return
            python = str(self.envs.root / status.digest / "bin" / "python")
        try:
            data = None
            if self.app_data is not None:
                data = private_dir(app_data_path(self.app_data, app.app_id))
        except (OSError, ValueError):
            return  # its runners fail to start, and say why
        self.templates.want(app.app_id, python, self._template_env(data), *_preload(app))

    async def _forked(
        self,
        app: _App,
        runner: _Runner,
        cmd: list[str],
        env: dict[str, str],
        shared: dict[str, str],
    ) -> ForkedProcess | None:
        """The runner forked from its template; None where it must start fresh (said once)."""
        if not self._forks(app) or runner.sock is None:
            return None
        # Its template (started here if its environment was not built at ensure_app) imports
        # the app's preload for the runners after this one.
        self.templates.want(app.app_id, cmd[0], shared, *_preload(app))
        template = self.templates.ready_for(app.app_id, cmd[0], shared)
        if template is None:
            return None
        if template.unsafe is not None:
            self.templates.say_once(template.key, template.unsafe)
            return None
        try:
            return await template.fork(runner.runner_id, cmd[3:], env, runner.sock.fileno())
        except TemplateRefused as exc:
            self.templates.say_once(template.key, str(exc))
            return None

    async def _interpreter(self, app: _App, runner: _Runner) -> str | None:
        """The app's environment's interpreter, built first if need be; None (and the runner
        gone) when the build failed or the runner was stopped meanwhile."""
        if not app.spec.requirements:
            return self.config.python  # no environment: today's fast path
        try:
            python = await self.envs.interpreter(app.spec.requirements)
        except BuildCancelled:
            app.runners.pop(runner.runner_id, None)
            runner.state = RunnerState.TERMINATED
            return None  # stopping: nothing to replace or report
        except EnvironmentBuildError as exc:
            app.runners.pop(runner.runner_id, None)
            runner.state = RunnerState.TERMINATED
            self._start_failed(
                app, runner, "environment", f"the app's environment did not build: {exc}"
            )
            self._gone(app, runner)
            return None
        if runner.state != RunnerState.PENDING:  # stopped while its environment was built
            app.runners.pop(runner.runner_id, None)
            runner.state = RunnerState.TERMINATED
            self._gone(app, runner)
            return None
        runner.started_at = time.monotonic()  # a first build does not eat its startup_timeout
        return python

    def _exited(self, app: _App, runner: _Runner, code: int) -> None:
        self.registry.remove(app.app_id, runner.runner_id)
        app.runners.pop(runner.runner_id, None)
        was_draining = runner.state == RunnerState.DRAINING
        runner.state = RunnerState.TERMINATED
        log.info(
            "runner_exited",
            app=app.app_id,
            runner=runner.runner_id,
            code=code,
            was_ready=runner.ready,
            reason=runner.detail or None,
        )
        # A runner of an earlier revision that never started says nothing of the current one.
        failed = not runner.ready and (not was_draining or runner.detail == "startup_timeout")
        if failed and not runner.outdated:
            tail = runner.output.tail if runner.output is not None else b""
            kind, message = failure_from_tail(tail, code)
            if runner.detail == "startup_timeout":
                kind = "startup_timeout"
                message = (
                    f"runner did not become ready within startup_timeout="
                    f"{app.spec.startup_timeout:g}s"
                )
            self._start_failed(app, runner, kind, message)
        died = runner.ready and not was_draining
        replace = died and (runner.outdated or _replaced_at_once(app))
        if died and not replace:
            # Its place leaves the target: the scheduler asks for it again within one pass if
            # requests in flight or waiting need it; one kept only by keep_alive is not restarted.
            app.target -= 1
            log.info(
                "runner_not_replaced",
                app=app.app_id,
                runner=runner.runner_id,
                target=app.target,
                min_concurrency=app.spec.min_concurrency,
            )
        self._gone(app, runner, replace_now=replace)

    def _gone(self, app: _App, runner: _Runner, *, replace_now: bool = False) -> None:
        """A runner's process is gone: its GPUs go back, its app and then others reconcile."""
        freed = self.gpus.release(runner.runner_id) if self.gpus is not None else []
        self._reconcile(app, replace_now=replace_now)
        # Runners of other GPU apps may have been waiting for these GPUs.
        for other in list(self._apps.values()) if freed else []:
            if other is not app and other.spec.num_gpus > 0:
                self._reconcile(other)

    def _start_failed(self, app: _App, runner: _Runner, kind: str, message: str) -> None:
        app.failures += 1
        delay = self.config.backoff.delay(app.failures)
        app.backoff_until = time.monotonic() + delay
        # Where the log is goes to the console and /_yurt/apps; callers hear the runner id.
        app.last_failure = f"{message} (runner {runner.runner_id}, log {runner.log_path})"
        log.warning(
            "runner_start_failed",
            app=app.app_id,
            runner=runner.runner_id,
            kind=kind,
            error=message,
            failures=app.failures,
            backoff_s=delay,
            log=str(runner.log_path),
        )
        error_type = "startup_timeout" if kind == "startup_timeout" else "runner_scheduling_failure"
        if kind == "payload":  # the runner's own message names the payload's file
            message = "the runner could not load the app's payload"
        failure = StartFailure(
            app.app_id, runner.runner_id, error_type, f"{message} (runner {runner.runner_id})"
        )
        for listener in self._listeners:
            listener(failure)

    def _add_secrets(self, app: _App, runner: _Runner, env: dict[str, str]) -> bool:
        """Put the server's secrets in ``env``, after the allow-list; False (and the runner
        failed to start) while one the app requires is unset or none can be read."""
        try:
            found = self.secrets() if self.secrets is not None else {}
            missing = [name for name in app.spec.required_secrets if name not in found]
        except ConfigError as exc:  # the message names the secret and the fix, never a value
            missing, why = [], str(exc)
        else:
            env.update(found)
            if not missing:
                return True
            why = (
                f"the app requires the secrets {missing}, not set on this server; set them "
                f"with `yurt secrets set NAME`"
            )
        app.runners.pop(runner.runner_id, None)
        runner.state = RunnerState.TERMINATED
        self._start_failed(app, runner, "secrets", why)
        self._gone(app, runner)
        return False

    # -- health ----------------------------------------------------------------------------

    async def _watch_health(self, app: _App, runner: _Runner) -> None:
        base = f"http://{self.config.host}:{runner.port}/_yurt/health"

        def port_open() -> None:
            if runner.state == RunnerState.PENDING:
                runner.state = RunnerState.SETUP

        deadline = runner.started_at + app.spec.startup_timeout
        ready = await self.health.wait_ready(base, deadline, port_open)
        if runner.state not in LIVE:
            return  # told to stop while it started: neither ready nor a failure
        if not ready:
            runner.detail = "startup_timeout"
            self._terminate(runner, "startup_timeout", grace=0)
            return
        self._became_ready(app, runner)
        hc = app.spec.health_check
        user = hc.health_check if hc is not None else None
        await self.health.until_unhealthy(
            base if user is None or user.call_regularly else base + "?basic=1",
            threshold=user.failure_threshold if user else self.config.health.failure_threshold,
            timeout=user.timeout_seconds + 1 if user else self.config.health.timeout,
            grace_until=runner.started_at + (user.start_period_seconds if user else 0.0),
            what={"app": app.app_id, "runner": runner.runner_id},
        )
        self._terminate(runner, "health_check_failed")
        self._reconcile(app)

    def _became_ready(self, app: _App, runner: _Runner) -> None:
        runner.ready = True
        runner.state = RunnerState.IDLE
        if not runner.outdated:  # the current revision starts: its backoff is over
            app.failures, app.backoff_until, app.last_failure = 0, 0.0, ""
        self.registry.set_healthy(
            app.app_id,
            RunnerEndpoint(runner.runner_id, self.config.host, runner.port, runner.token),
        )
        log.info(
            "runner_ready",
            app=app.app_id,
            runner=runner.runner_id,
            startup_s=round(time.monotonic() - runner.started_at, 3),
        )
        if not runner.outdated:
            self._reconcile(app)  # an old runner this one replaces can go now

    # -- stopping --------------------------------------------------------------------------

    def _terminate(self, runner: _Runner, reason: str, grace: float | None = None) -> None:
        if runner.state in (RunnerState.DRAINING, RunnerState.TERMINATED):
            return
        runner.state = RunnerState.DRAINING
        runner.detail = runner.detail or reason
        self.registry.remove(runner.app_id, runner.runner_id)
        app = self._apps.get(runner.app_id)
        if grace is None:
            grace = app.spec.termination_grace_period_seconds if app else 5.0
        log.info("runner_terminating", app=runner.app_id, runner=runner.runner_id, reason=reason)
        if runner.proc is not None:
            self._signal(runner, signal.SIGTERM)
        runner.tasks.append(asyncio.create_task(self._kill_later(runner, grace)))

    async def _kill_later(self, runner: _Runner, grace: float) -> None:
        await asyncio.sleep(grace + self.config.kill_after)
        if runner.proc is not None and runner.proc.returncode is None:
            log.warning("runner_killed", app=runner.app_id, runner=runner.runner_id)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner.proc.pid, signal.SIGKILL)

    @staticmethod
    def _signal(runner: _Runner, sig: signal.Signals) -> None:
        if runner.proc is not None and runner.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                runner.proc.send_signal(sig)
