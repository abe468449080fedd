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

Three parts: this class keeps the apps and says what each runner's readiness and exit mean,
``local_plan.plan`` decides which runners start and stop, and ``local_supervisor.Supervisor``
runs their processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from yurt.backends.base import (
    FailureListener,
    KeepListener,
    RunnerEndpoint,
    RunnerView,
    StartFailure,
    Unplaceable,
)
from yurt.backends.gpus import GpuAllocator, discover_gpus
from yurt.backends.local_plan import (
    LIVE,
    SHOWN,
    Phase,
    Start,
    Stop,
    StopReason,
    WaitGpus,
    WakeIn,
    Wants,
    after_exit,
    outdated,
    plan,
    stopped_phase,
)
from yurt.backends.local_runner import LocalApp, Runner
from yurt.backends.local_supervisor import Supervisor
from yurt.backends.runnerlog import failure_from_tail
from yurt.config import EnvsConfig, LocalBackendConfig
from yurt.discovery.local import LocalRegistry
from yurt.envs import Environments
from yurt.machines import with_overrides
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.local")


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
        # Where runners of apps with requirements get their interpreter.
        self.envs = envs or Environments(log_dir.parent / "envs", EnvsConfig(), config.python)
        # The server's changes to the machine catalog: for the GPU assignment here, and passed
        # to each runner for its own GPU check.
        self.machines = dict(machines or {})
        self.catalog = with_overrides(self.machines)
        self.registry = registry
        self.log_dir = log_dir
        self._apps: dict[str, LocalApp] = {}
        self._listeners: list[FailureListener] = []
        self._stopping = False
        self.supervisor = Supervisor(
            config,
            self,
            log_dir,
            self.envs,
            gpus=gpus,
            machines=self.machines,
            console=console,
            # Where each app's persistent data directory lives (``<owner>/<app>`` below it);
            # None gives runners none.
            app_data=app_data,
            # The server's secrets, read at each runner's start: a change reaches runners
            # started after it.
            secrets=secrets,
            # Where runners write toolkit outputs (``yurt.files.location``), read at each start.
            files=files,
        )
        # Warm interpreters that fork runners (docs/cold-starts.md).
        self.templates = self.supervisor.templates

    @property
    def gpus(self) -> GpuAllocator | None:
        """The GPUs runners may use; None until the first GPU app asks NVML."""
        return self.supervisor.gpus

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the health checker's HTTP session."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await self.supervisor.start()

    async def stop(self, grace: float | None = None) -> None:
        """Stop every runner and wait until each process has exited."""
        self._stopping = True
        self.envs.close()  # a build under way would hold the stop for minutes
        runners = [r for a in self._apps.values() for r in a.runners.values()]
        for app in self._apps.values():
            if app.wakeup is not None:
                app.wakeup.cancel()
        for r in runners:
            self._terminate(r, StopReason.SHUTDOWN, grace=grace)
        # Each runner's first task ends only after its process has exited (or failed to start),
        # including runners whose process was still being spawned.
        await asyncio.gather(*(r.tasks[0] for r in runners if r.tasks), return_exceptions=True)
        for r in runners:
            for t in r.tasks[1:]:
                t.cancel()
        await self.supervisor.close()

    # -- Backend protocol ------------------------------------------------------------------

    async def ensure_app(self, app_id: str, spec: AppSpec, payload: Path) -> None:
        """Register (or update) an app; existing runners keep their revision until replaced.

        Raises ``SchedulingError`` for a GPU app whose GPUs this machine does not have.
        """
        if spec.num_gpus > 0:
            if self.supervisor.gpus is None:
                # Once: NVML lists the same GPUs until the driver reloads.
                found = await asyncio.to_thread(discover_gpus, self.config.gpus, self.catalog)
                self.supervisor.gpus = self.supervisor.gpus or found
                log.info("gpus_found", gpus=[g.as_dict() for g in found.gpus], why=found.why_none)
            self.supervisor.gpus.check(app_id, spec.machine_types, spec.num_gpus)
        app = self._apps.get(app_id)
        if app is None:
            app = self._apps[app_id] = LocalApp(app_id, spec, payload)
        else:
            app.spec, app.payload = spec, payload
        self.supervisor.warm_template(app)

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
        if app is None or runner is None or runner.phase not in LIVE:
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
            self._terminate(r, StopReason.UNDEPLOYED)
        # As in stop(): a runner's first task ends once its process has exited.
        await asyncio.gather(*(r.tasks[0] for r in runners if r.tasks), return_exceptions=True)
        if self._apps.get(app_id) is app:
            del self._apps[app_id]
            self.supervisor.templates.drop_app(app_id)
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
        old = [r for r in app.runners.values() if r.phase in LIVE]
        app.generation += 1  # the runners started before are of an earlier revision now
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
                SHOWN[r.phase],
                self.config.host,
                r.port,
                r.proc.pid if r.proc else None,
                r.started_at,
                r.reason,
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

    def _reconcile(self, app: LocalApp, *, replace_now: bool = False) -> None:
        """Carry out the plan for the app: start or stop runners to meet its target;
        ``replace_now`` skips crash backoff once (``local_plan.plan``)."""
        if self._stopping:
            return
        gpus, room = self.supervisor.gpus, None
        if app.spec.num_gpus > 0:
            room = gpus.room(app.spec.machine_types, app.spec.num_gpus) if gpus is not None else 0
        now = time.monotonic()
        for action in plan(
            self._wants(app), list(app.runners.values()), room, now=now, replace_now=replace_now
        ):
            if isinstance(action, Start):
                self.supervisor.spawn(app)
            elif isinstance(action, Stop):
                self._terminate(app.runners[action.runner_id], action.reason)
            elif isinstance(action, WaitGpus):
                log.info(
                    "runner_waits_for_gpus",
                    app=app.app_id,
                    free=len(gpus.free if gpus is not None else []),
                )
            elif isinstance(action, WakeIn) and app.wakeup is None:
                app.wakeup = asyncio.get_running_loop().call_later(action.seconds, self._wake, app)

    @staticmethod
    def _wants(app: LocalApp) -> Wants:
        return Wants(app.target, app.backoff_until, app.generation)

    def _wake(self, app: LocalApp) -> None:
        app.wakeup = None
        self._reconcile(app)

    def _terminate(
        self, runner: Runner, reason: str, grace: float | None = None, *, timed_out: bool = False
    ) -> None:
        """Tell a live runner to stop (the supervisor signals its process); ``timed_out``: it
        was not ready in time, a failed start."""
        if runner.phase not in LIVE:
            return
        app = self._apps.get(runner.app_id)
        generation = app.generation if app is not None else runner.generation
        runner.stop(stopped_phase(runner.phase, timed_out=timed_out), reason, generation)
        self.registry.remove(runner.app_id, runner.runner_id)
        if grace is None:
            grace = app.spec.termination_grace_period_seconds if app else 5.0
        log.info("runner_terminating", app=runner.app_id, runner=runner.runner_id, reason=reason)
        self.supervisor.stop(runner, grace)

    # -- what the supervisor reports (RunnerEvents) ------------------------------------------

    def runner_ready(self, app: LocalApp, runner: Runner) -> None:
        """It passed its health check: it serves, and its revision's backoff is over."""
        runner.move(Phase.READY)
        current = not outdated(runner, app.generation)
        if current:  # the current revision starts: its backoff is over
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
        if current:
            self._reconcile(app)  # an old runner this one replaces can go now

    def runner_check_failed(self, app: LocalApp, runner: Runner, reason: StopReason) -> None:
        """Not ready in time (stopped at once), or unhealthy (stopped, and replaced)."""
        if reason == StopReason.STARTUP_TIMEOUT:
            self._terminate(runner, reason, grace=0, timed_out=True)
            return
        self._terminate(runner, reason)
        self._reconcile(app)

    def runner_not_started(
        self, app: LocalApp, runner: Runner, failure: tuple[str, str] | None
    ) -> None:
        """No process started for it: a failed start, or one stopped first."""
        app.runners.pop(runner.runner_id, None)
        runner.move(Phase.EXITED)
        if failure is not None:
            self._start_failed(app, runner, *failure)
        self._gone(app, runner)

    def runner_exited(self, app: LocalApp, runner: Runner, code: int) -> None:
        """Its process exited: a failed start, a death to replace or not, or a stop."""
        self.registry.remove(app.app_id, runner.runner_id)
        app.runners.pop(runner.runner_id, None)
        others = list(app.runners.values())
        exit = after_exit(runner, others, self._wants(app), app.spec.min_concurrency)
        was_ready = runner.phase in (Phase.READY, Phase.DRAINING)
        runner.move(Phase.EXITED)
        log.info(
            "runner_exited",
            app=app.app_id,
            runner=runner.runner_id,
            code=code,
            was_ready=was_ready,
            reason=runner.reason or None,
        )
        if exit.failed_start:
            tail = runner.output.tail if runner.output is not None else b""
            kind, message = failure_from_tail(tail, code)
            if exit.timed_out:
                kind = "startup_timeout"
                message = (
                    f"runner did not become ready within startup_timeout="
                    f"{app.spec.startup_timeout:g}s"
                )
            self._start_failed(app, runner, kind, message)
        if exit.drop_target:
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
        self._gone(app, runner, replace_now=exit.replace_now)

    def _gone(self, app: LocalApp, runner: Runner, *, replace_now: bool = False) -> None:
        """A runner's process is gone: its GPUs go back, its app and then others reconcile."""
        gpus = self.supervisor.gpus
        freed = gpus.release(runner.runner_id) if gpus is not None else []
        self._reconcile(app, replace_now=replace_now)
        # Runners of other GPU apps may have been waiting for these GPUs.
        for other in list(self._apps.values()) if freed else []:
            if other is not app and other.spec.num_gpus > 0:
                self._reconcile(other)

    def _start_failed(self, app: LocalApp, runner: Runner, kind: str, message: str) -> None:
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
