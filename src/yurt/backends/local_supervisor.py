"""The local backend's process supervisor: it spawns a runner's process (forked from its app's
template where it can: docs/cold-starts.md), watches its health, signals it, and learns its exit.

It decides nothing: what a runner's readiness, failed check or exit means is the backend's
(``RunnerEvents``), which and when to start or stop is the planner's (``local_plan``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import structlog

from yurt.appdata import app_data_path
from yurt.backends.gpus import GpuAllocator
from yurt.backends.health import HttpHealthChecker
from yurt.backends.local_plan import LIVE, Phase, StopReason
from yurt.backends.local_runner import LocalApp, Runner
from yurt.backends.localproc import bound_socket, runner_command, runner_env
from yurt.backends.runnerlog import Console, RunnerOutput
from yurt.backends.template_pool import TemplatePool
from yurt.backends.templates import ForkedProcess, TemplateRefused
from yurt.config import LocalBackendConfig
from yurt.envs import BuildCancelled, Environments
from yurt.errors import ConfigError, EnvironmentBuildError
from yurt.privatefs import private_dir
from yurt.runner.contract import RUNNER_TOKEN_ENV

log = structlog.get_logger("yurt.local")


class RunnerEvents(Protocol):
    """What the supervisor tells the backend of a runner."""

    def runner_ready(self, app: LocalApp, runner: Runner) -> None:
        """It passed its health check."""

    def runner_check_failed(self, app: LocalApp, runner: Runner, reason: StopReason) -> None:
        """It was not ready in time (STARTUP_TIMEOUT), or failed its health checks."""

    def runner_exited(self, app: LocalApp, runner: Runner, code: int) -> None:
        """Its process exited with ``code``."""

    def runner_not_started(
        self, app: LocalApp, runner: Runner, failure: tuple[str, str] | None
    ) -> None:
        """No process started: ``failure`` (kind, message), or None where it was stopped first."""


def _preload(app: LocalApp) -> tuple[list[str], str | None]:
    """What the app's template imports: its ``preload``, or else its payload, unpickled."""
    if app.spec.preload is not None:
        return list(app.spec.preload), None
    return [], str(app.payload)


class Supervisor:
    """Runs each runner of the local backend as a process of this one."""

    def __init__(
        self,
        config: LocalBackendConfig,
        events: RunnerEvents,
        log_dir: Path,
        envs: Environments,
        *,
        gpus: GpuAllocator | None,
        machines: Mapping[str, Mapping[str, Any]],
        console: BinaryIO | None,
        app_data: Path | None,
        secrets: Callable[[], Mapping[str, str]] | None,
        files: Callable[[], Mapping[str, str]] | None,
    ) -> None:
        self.config = config
        self.events = events
        self.log_dir = log_dir
        self.envs = envs
        self.gpus = gpus  # None until the first GPU app asks NVML
        self.machines = machines
        if console is None and config.console:
            console = sys.stderr.buffer
        # Where runner output is shown as it comes, each line prefixed with the runner id.
        self.console = Console(console) if console is not None else None
        self.app_data = app_data
        self.secrets = secrets
        self.files = files
        self.health = HttpHealthChecker(config.health)
        # Warm interpreters that fork runners (docs/cold-starts.md).
        self.templates = TemplatePool(log_dir, config.template_start_timeout)

    async def start(self) -> None:
        """Open the health checker's HTTP session."""
        await self.health.start()

    async def close(self) -> None:
        """Close the templates (after the runners: each reports its runners' exits), the health
        checker and the console."""
        await self.templates.close()
        await self.health.close()
        if self.console is not None:
            await asyncio.to_thread(self.console.close)

    # -- spawning --------------------------------------------------------------------------

    def spawn(self, app: LocalApp) -> bool:
        """Start one runner; False (and nothing started) while its GPUs are all taken."""
        runner_id = "r-" + uuid.uuid4().hex[:10]
        sock = bound_socket(self.config.host)  # before any GPU is taken: it may raise
        if app.spec.num_gpus > 0:
            spec, gpus = app.spec, self.gpus  # ensure_app has found them
            if gpus is None or gpus.acquire(runner_id, spec.machine_types, spec.num_gpus) is None:
                sock.close()
                return False
        safe = app.app_id.replace("/", "--")
        runner = Runner(
            runner_id=runner_id,
            app_id=app.app_id,
            port=sock.getsockname()[1],
            log_path=self.log_dir / f"{safe}-{runner_id}.log",
            started_at=time.monotonic(),
            generation=app.generation,
            sock=sock,
        )
        app.runners[runner_id] = runner
        task = asyncio.create_task(self._run(app, runner))
        task.add_done_callback(lambda _: runner.close_socket())  # even if it never ran
        runner.tasks.append(task)
        return True

    async def _run(self, app: LocalApp, runner: Runner) -> None:
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
        try:
            started = await self._open(app, runner, cmd)
        except (OSError, ValueError) as exc:  # ValueError: a data directory it cannot have
            log.warning("runner_spawn_failed", app=app.app_id, command=cmd[0], error=str(exc))
            # The caller hears why without the server's paths (the console has the command).
            why = getattr(exc, "strerror", None) or type(exc).__name__
            failure = ("spawn", f"the runner process did not start: {why}")
            self.events.runner_not_started(app, runner, failure)
            return
        finally:
            runner.close_socket()  # the runner has its own copy now (or never will)
        if started:
            await self._supervise(app, runner)

    async def _open(self, app: LocalApp, runner: Runner, cmd: list[str]) -> bool:
        """Start the runner's process (forked, or fresh); False where its secrets are missing."""
        gpu_ids = self.gpus.uuids(runner.runner_id) if self.gpus is not None else []
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
            return False
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
        return True

    async def _supervise(self, app: LocalApp, runner: Runner) -> None:
        """Pump the process's output, watch its health, and report its exit."""
        assert runner.proc is not None and runner.proc.stdout is not None
        output = runner.output = RunnerOutput(
            runner.runner_id, runner.log_path, self.console, app_id=app.app_id
        )
        pump = asyncio.create_task(output.pump(runner.proc.stdout))
        runner.tasks.append(pump)
        if runner.phase not in LIVE:  # stopped while the process was starting
            self.signal(runner, signal.SIGTERM)
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
        self.events.runner_exited(app, runner, code)

    async def _interpreter(self, app: LocalApp, runner: Runner) -> str | None:
        """The app's environment's interpreter, built first if need be; None (and the runner
        gone) when the build failed or the runner was stopped meanwhile."""
        if not app.spec.requirements:
            return self.config.python  # no environment: today's fast path
        try:
            python = await self.envs.interpreter(app.spec.requirements)
        except BuildCancelled:
            app.runners.pop(runner.runner_id, None)
            runner.move(Phase.EXITED)
            return None  # stopping: nothing to replace or report
        except EnvironmentBuildError as exc:
            failure = ("environment", f"the app's environment did not build: {exc}")
            self.events.runner_not_started(app, runner, failure)
            return None
        if runner.phase is not Phase.STARTING:  # stopped while its environment was built
            self.events.runner_not_started(app, runner, None)
            return None
        runner.started_at = time.monotonic()  # a first build does not eat its startup_timeout
        return python

    def _add_secrets(self, app: LocalApp, runner: Runner, env: dict[str, str]) -> bool:
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
        self.events.runner_not_started(app, runner, ("secrets", why))
        return False

    # -- templates ---------------------------------------------------------------------------

    def forks(self, app: LocalApp) -> bool:
        """Whether the app's runners are forked from a template."""
        return self.config.fork_runners and app.spec.fork_runners

    def _template_env(self, data: Path | None) -> dict[str, str]:
        """A template's environment: its runners', less what differs between runners (their
        GPUs, token and secrets: added in each child)."""
        env = runner_env(os.environ, [], self.config.pass_env, data)
        if self.files is not None:
            env |= self.files()
        return env

    def warm_template(self, app: LocalApp) -> None:
        """Start the app's template ahead of its first runner, with its preload imported:
        where its environment is built already (else its first runner starts it)."""
        if not self.forks(app):
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
        app: LocalApp,
        runner: Runner,
        cmd: list[str],
        env: dict[str, str],
        shared: dict[str, str],
    ) -> ForkedProcess | None:
        """The runner forked from its template; None where it must start fresh (said once)."""
        if not self.forks(app) or runner.sock is None:
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

    # -- health ----------------------------------------------------------------------------

    async def _watch_health(self, app: LocalApp, runner: Runner) -> None:
        base = f"http://{self.config.host}:{runner.port}/_yurt/health"

        def port_open() -> None:
            if runner.phase is Phase.STARTING:
                runner.move(Phase.SETUP)

        deadline = runner.started_at + app.spec.startup_timeout
        ready = await self.health.wait_ready(base, deadline, port_open)
        if runner.phase not in LIVE:
            return  # told to stop while it started: neither ready nor a failure
        if not ready:
            self.events.runner_check_failed(app, runner, StopReason.STARTUP_TIMEOUT)
            return
        self.events.runner_ready(app, runner)
        hc = app.spec.health_check
        user = hc.health_check if hc is not None else None
        await self.health.until_unhealthy(
            base if user is None or user.call_regularly else base + "?basic=1",
            threshold=user.failure_threshold if user else self.config.health.failure_threshold,
            timeout=user.timeout_seconds + 1 if user else self.config.health.timeout,
            grace_until=runner.started_at + (user.start_period_seconds if user else 0.0),
            what={"app": app.app_id, "runner": runner.runner_id},
        )
        self.events.runner_check_failed(app, runner, StopReason.HEALTH_CHECK_FAILED)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, runner: Runner, grace: float) -> None:
        """SIGTERM now (or once its process runs), SIGKILL to its group after ``grace``."""
        if runner.proc is not None:
            self.signal(runner, signal.SIGTERM)
        runner.tasks.append(asyncio.create_task(self._kill_later(runner, grace)))

    async def _kill_later(self, runner: Runner, grace: float) -> None:
        await asyncio.sleep(grace + self.config.kill_after)
        if runner.proc is not None and runner.proc.returncode is None:
            log.warning("runner_killed", app=runner.app_id, runner=runner.runner_id)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner.proc.pid, signal.SIGKILL)

    @staticmethod
    def signal(runner: Runner, sig: signal.Signals) -> None:
        """Send ``sig`` to the runner's process, if it still runs."""
        if runner.proc is not None and runner.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                runner.proc.send_signal(sig)
