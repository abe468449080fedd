"""The cluster backend: each app is a Nomad service job, each runner one of its allocations.

The group's Count is the target; ``scaling`` keeps the Count asked for apart from the one Nomad
accepted, and which runners are stopping. A failed allocation waiting to be rescheduled, which
Nomad counts against the Count, is listed as a PENDING runner that is never routable
(``allocs.counted``). ``watch`` follows the allocations; healthy runners are found through
Consul (``ConsulDiscovery``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from yurt.backends.base import (
    FailureListener,
    KeepListener,
    RunnerState,
    RunnerView,
    Unplaceable,
)
from yurt.backends.nomad.allocs import counted, is_live, stop_order, stops_for, view_of
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.evals import ask_of
from yurt.backends.nomad.jobspec import META_REVISION, build_job, register_body
from yurt.backends.nomad.naming import GROUP, PayloadRef, job_id
from yurt.backends.nomad.scaling import _App, _leaving
from yurt.backends.nomad.secrets import JobVariables, NomadSecrets
from yurt.backends.nomad.surge import Surge, surge_id
from yurt.backends.nomad.watch import AllocationWatch, HealthHistory, placement_detail
from yurt.config import EnvsConfig, NomadConfig
from yurt.errors import ClusterError, ClusterNotFound, ClusterUnavailable
from yurt.packaging import PayloadHeader, read_header
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.nomad")

META_DIGEST = "yurt_job_digest"  # the job body's digest: an unchanged app is not re-registered


def job_digest(job: dict[str, Any]) -> str:
    """A digest of the job body apart from its counts (which the scheduler owns)."""
    body = json.loads(json.dumps(job))
    for group in body.get("TaskGroups") or []:
        group.pop("Count", None)
    body.get("Meta", {}).pop(META_DIGEST, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class NomadBackend(Surge, AllocationWatch):
    """Runs runners as allocations of one Nomad job per app (a ``Backend``)."""

    def __init__(
        self,
        config: NomadConfig,
        links: Callable[[str, PayloadHeader], PayloadRef],
        *,
        client: NomadClient | None = None,
        history: HealthHistory | None = None,
        machines: Mapping[str, Mapping[str, Any]] | None = None,
        datacenter: Callable[[], Awaitable[str]] | None = None,
        envs: EnvsConfig | None = None,
        runner_token: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self.envs = envs or EnvsConfig()  # how runners build their app's environment
        # Where runners go when [nomad] datacenters is unset: the Consul agent's datacenter,
        # asked once at start, so that discovery (which asks that agent) sees every runner.
        self._datacenter_source = datacenter
        self.datacenters: tuple[str, ...] | None = config.datacenters
        self.links = links
        self.machines = dict(machines or {})  # the server's changes to the machine catalog
        self.client = client or NomadClient(config)
        self._own_client = client is None
        # The server's secrets (``yurt secrets``), and each job's Variable of them.
        self.secrets = NomadSecrets(self.client, config.secrets_path, self._secrets_changed)
        # ``runner_token``: a job's runners' token, from its id (what discovery gives the router).
        self.variables = JobVariables(self.client, self.secrets, runner_token)
        self.history = history
        self._apps: dict[str, _App] = {}
        self._listeners: list[FailureListener] = []
        self._keepers: list[KeepListener] = []
        self._chores: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check that Nomad answers (and accepts our token); raises a ``ClusterError``."""
        version = await self.client.agent_version()
        log.info("nomad_connected", addr=self.config.addr, version=version)
        if self.datacenters is None and self._datacenter_source is not None:
            self.datacenters = (await self._datacenter_source(),)
            log.info("nomad_datacenters", datacenters=list(self.datacenters), source="consul")

    async def stop(self, grace: float | None = None) -> None:
        """End the watches; the jobs and their runners stay (a restarted server adopts them)."""
        tasks = [
            t
            for a in self._apps.values()
            for t in (a.watch, a.evals_watch, a.scaler, *a.surges)
            if t is not None
        ]
        tasks += list(self._chores)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_client:
            await self.client.close()

    async def deregister_all(self) -> None:
        """Stop and purge every job this backend registered (an ephemeral ``yurt run``)."""
        for app in list(self._apps.values()):
            log.info("nomad_job_deregister", app=app.app_id, job=app.job_id)
            await self._end_surges(app)
            await self._purge(app.job_id)

    async def __aenter__(self) -> NomadBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- Backend protocol ------------------------------------------------------------------

    async def ensure_app(self, app_id: str, spec: AppSpec, payload: Path) -> None:
        """Register the app's job (once per body), keeping the Count already running.

        A Count above ``spec.max_concurrency`` (a redeploy lowering it, or a job adopted after a
        restart) is scaled down to it first, while the job registered before still allows that
        Count: re-registering preserves the Count, and neither Nomad nor its double checks a
        preserved Count against the new ``Scaling.Max``, so nothing else would ever lower it.
        Nomad stops the highest name indexes then, whatever they are doing: at re-registration
        nothing better is possible (the new maximum holds at once), and it is logged
        (``nomad_count_above_max``). Should that scale be deferred (Nomad has no leader, or a
        job an older yurt registered is still deploying), the job is registered with the
        lowered Count itself rather than preserving the one above it.
        """
        data = await asyncio.to_thread(payload.read_bytes)
        header, _ = read_header(data)
        ref = self.links(app_id, header)
        app = self._apps.get(app_id) or await self._adopt(app_id)
        name = app.job_id
        async with app.lock:
            top = spec.max_concurrency
            await self._hold_to_max(app, top)
            job = build_job(
                app_id,
                spec,
                ref,
                self.config,
                count=app.target,
                machines=self.machines,
                datacenters=self.datacenters,
                envs=self.envs,
            )
            app.ask = ask_of(job, GROUP)
            digest = job_digest(job)
            if digest == app.digest:
                # Back to the body the job runs: stop rolling away from it (a roll in its
                # second stage already registered this body, and runs on).
                self._cancel_surge(app)
            if digest == app.digest:
                # The body runs already (the digest covers the revision): its Variable gets the
                # secrets as they are now (a server restarted after they changed).
                await self.variables.write(name, ref.token)
            if digest != app.digest and await self._register(app, spec, job, digest, ref, top):
                return self._follow_app(app)  # a surge rolls the runners over
        self._follow_app(app)

    async def _register(
        self, app: _App, spec: AppSpec, job: dict[str, Any], digest: str, ref: PayloadRef, top: int
    ) -> bool:
        """Register a new job body (``ensure_app``); True when a surge job took it instead."""
        job["Meta"][META_DIGEST] = digest
        # Preserve Nomad's Count unless it is still above the maximum (the scale down is
        # deferred): then the job carries the lowered Count itself.
        lower, count, covered = app.accepted > top, app.target, set(app.lowering)
        if self._surges(app, lower):
            self._start_surge(app, spec, job, digest, ref.revision, ref.token)
            return True
        # Before the register: the task's template waits for the Variable.
        await self.variables.write(app.job_id, ref.token)
        reply = await self.client.register(register_body(job, preserve_counts=not lower))
        app.digest, app.revision = digest, ref.revision
        if lower:
            self._scale_accepted(app, count, covered)
            if app.target != count:
                # The target moved while the register was out (and a deferred scale may have
                # landed before it): Nomad has ``count`` now, so send the target.
                with contextlib.suppress(ClusterError):  # _scale_failed logged it
                    await self._scale(app)
        log.info(
            "nomad_job_registered",
            app=app.app_id,
            job=app.job_id,
            revision=ref.revision,
            count=app.target,
            eval=reply.get("EvalID"),
            warnings=reply.get("Warnings") or None,
        )
        return False

    async def _adopt(self, app_id: str) -> _App:
        """The app's state, with the Count of a job a previous server left running."""
        name = job_id(self.config.job_prefix, app_id)
        app = self._apps[app_id] = _App(app_id, name, target=0)
        existing = await self.client.get_job(name)
        if existing is not None and not existing.get("Stop"):
            app.accepted = app.target = _count(existing)
            meta = existing.get("Meta") or {}
            app.digest = str(meta.get(META_DIGEST) or "")
            app.revision = str(meta.get(META_REVISION) or "")
            log.info("nomad_job_adopted", app=app_id, job=name, count=app.target)
        if await self.client.get_job(surge_id(name)) is not None:
            # A surge a previous server left behind: its revision is registered anew.
            await self.client.deregister(surge_id(name), purge=True)
        return app

    async def _hold_to_max(self, app: _App, top: int) -> None:
        """Lower the target, and Nomad's Count if it is above ``top`` (``ensure_app``)."""
        app.target = min(app.target, top)
        if app.accepted > top:
            await self._sync(app)  # so that the runners the scale stops are marked stopping
            log.warning(
                "nomad_count_above_max",
                app=app.app_id,
                job=app.job_id,
                count=app.accepted,
                max_concurrency=top,
                stopping=stop_order(app.allocs.values())[: app.accepted - top] or None,
            )
            await self._scale(app)  # raises if Nomad refuses it for good

    def _surges(self, app: _App, lower: bool) -> bool:
        """Whether a new registration is rolled through a surge job (``surge``): any change of
        the body of a job with runners, followed through Consul, and no Count to lower first.

        Not only a new revision: any change of the job body changes the job's Meta
        (``META_DIGEST``), and Nomad compares each task's meta merged with the job's
        (``Job.CombinedTaskMeta``, scheduler/util.go:249-253 at hashicorp/nomad aa026cc9), so
        every change makes new allocations, and with MaxParallel 0 Nomad stops every old one
        at once (scheduler/reconciler/reconcile_cluster.go:794-796).
        """
        return bool(
            self.history is not None
            and (app.digest or app.revision)
            and app.accepted > 0
            and not lower
        )

    def _follow_app(self, app: _App) -> None:
        if app.watch is None:
            app.watch = asyncio.create_task(self._follow(app))
        if app.evals_watch is None:
            app.evals_watch = asyncio.create_task(self._follow_evals(app))

    async def set_target(self, app_id: str, count: int) -> None:
        """Ask Nomad for ``count`` runners.

        While Nomad refuses for a while (a deployment in progress, no leader) the call returns
        and a background task retries until the Count lands. Any other refusal raises, and the
        target goes back to the Count Nomad last accepted, so that the scheduler asks again.
        """
        app = self._apps[app_id]
        if count != app.target:
            log.info("target_changed", app=app_id, old=app.target, new=count)
        app.target = count
        await self._scale(app)

    async def remove_app(self, app_id: str) -> None:
        """Stop and purge the app's job, then forget the app (an undeploy).

        ``DELETE /v1/job/:id?purge=true``: Nomad stops every allocation as it stops a job
        (KillSignal, then SIGKILL after KillTimeout; its Consul services are deregistered) and,
        with ``purge``, deletes the job at once instead of keeping it, stopped, until its
        garbage collector runs. Read in hashicorp/nomad (aa026cc9):
        ``command/agent/job_endpoint.go:622-632`` (``jobDelete`` reads ``purge`` with
        ``strconv.ParseBool``), ``nomad/fsm.go:897-907`` (``handleJobDeregister`` deletes the
        job when it is set), ``nomad/job_endpoint.go:798-824`` (``Job.Deregister``: a purge
        needs ``submit-job`` or ``purge-job``; an unknown job is no error, where the double
        answers 404, which ``deregister`` takes as done too); the API reference is
        developer.hashicorp.com/nomad/api-docs/jobs#stop-a-job. The job id comes from the app
        id, so a job an earlier server left goes too, and so does its surge job.
        """
        name = job_id(self.config.job_prefix, app_id)
        log.info("nomad_job_deregister", app=app_id, job=name, purge=True)
        app = self._apps.get(app_id)
        if app is None:
            await self._purge(name)
            return
        # Under the app's lock, and with every roll ended first: a roll reaching its second
        # stage meanwhile would register the app's job again (``surge``).
        async with app.lock:
            await self._end_surges(app)
            await self._purge(name)  # a refusal raises: nothing forgotten
        self._apps.pop(app_id, None)
        tasks = [t for t in (app.watch, app.evals_watch, app.scaler) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _purge(self, name: str) -> None:
        """Stop and purge an app's surge job, then its job, then their Variables."""
        await self.client.deregister(surge_id(name), purge=True)
        await self.client.deregister(name, purge=True)
        await self.variables.drop(surge_id(name))
        await self.variables.drop(name)

    async def _secrets_changed(self) -> None:
        """A secret was set or unset: every job's Variable gets the secrets as they are now
        (runners started after see them; running ones keep theirs, ``ChangeMode`` noop)."""
        await self.variables.refresh()

    async def roll(self, app_id: str) -> None:
        """Nothing to do: ``ensure_app`` started the surge of a new revision (``surge``)."""

    def target(self, app_id: str) -> int:
        """The runner count last asked for (Nomad has it, or is being asked until it does)."""
        return self._apps[app_id].target

    async def stop_runner(self, app_id: str, runner_id: str, *, reason: str, replace: bool) -> None:
        """Stop one allocation (Nomad replaces it), or lower the Count by one (no replacement).

        Lowering the Count stops the highest name index: call it for the runners ``pick_stops``
        returned, in that order. A lowering that fails for good raises and the runner is no
        longer counted as stopping; one that returned and later does not stop the runner (Nomad
        refuses the deferred Count for good, a raise overtakes it) tells the keep listeners.

        A stop with ``replace`` that Nomad refuses for now (unreachable, no leader) is retried
        in the background, the runner draining meanwhile; one Nomad refuses for good leaves the
        runner running and tells the keep listeners (it is logged, not raised). A failed
        allocation waiting to be rescheduled is not stopped with ``replace``: Nomad replaces it.
        """
        app = self._apps.get(app_id)
        stub = app.allocs.get(runner_id) if app else None
        if app is None or stub is None or runner_id in app.stopping:
            return
        if not (is_live(stub) if replace else counted(stub)):
            return
        log.info("runner_terminating", app=app_id, runner=runner_id, reason=reason, replace=replace)
        if replace:
            app.stopping.add(runner_id)
            app.replacing.add(runner_id)
            try:
                await self.client.stop_allocation(runner_id)
            except ClusterNotFound:
                pass  # already gone
            except ClusterUnavailable as exc:
                log.warning("nomad_stop_deferred", app=app_id, runner=runner_id, reason=str(exc))
                self._chore(self._stop_later(app, runner_id))
            except ClusterError as exc:
                self._stop_refused(app, runner_id, exc)
            except BaseException:
                app.stopping.discard(runner_id)
                app.replacing.discard(runner_id)
                raise
            return
        if runner_id not in stops_for(app.allocs.values(), {runner_id}, leaving=_leaving(app)):
            log.warning("nomad_stop_not_highest", app=app_id, runner=runner_id)
        app.stopping.add(runner_id)
        app.lowering.add(runner_id)
        app.target = max(0, app.target - 1)
        await self._scale(app, own=runner_id)

    def pick_stops(self, app_id: str, candidates: Sequence[str]) -> list[str]:
        """Which of ``candidates`` (runners the scheduler may stop) to stop, in order.

        Nomad lowers the Count by stopping the highest name index, so this walks the
        allocations Nomad counts from the highest index down and takes each that is a candidate,
        up to the first that is not: a busy high-index runner blocks any lowering. A failed
        allocation waiting to be rescheduled is taken even if not a candidate (it serves
        nobody; the scheduler lists it anyway, as a runner that is not routable). Runners a
        lower Count is already stopping are stepped over; one stopped for a replacement blocks,
        since the replacement takes its index. Call ``stop_runner(replace=False)`` for each, in
        the order returned.
        """
        app = self._apps.get(app_id)
        if app is None:
            return []
        return stops_for(app.allocs.values(), set(candidates), leaving=_leaving(app))

    def runners(self, app_id: str) -> list[RunnerView]:
        """The allocations Nomad counts or is stopping, plus one CRASH_BACKOFF entry while
        starts keep failing. A failed allocation waiting to be rescheduled is PENDING
        ("rescheduling after a failure"): the scheduler counts it, and it is never routable.
        """
        app = self._apps.get(app_id)
        if app is None:
            return []
        now, mono = time.time(), time.monotonic()
        views = []
        for stub in app.allocs.values():
            rid = str(stub.get("ID"))
            healthy = self._healthy(app, rid, stub)
            view = view_of(
                app_id,
                stub,
                healthy=healthy,
                draining=rid in app.stopping,
                now=now,
                mono=mono,
                address=app.ports.get(rid),
            )
            if view is not None:
                views.append(view)
        if app.failures and not any(v.state == RunnerState.IDLE for v in views):
            views.append(RunnerView.backoff(app_id, mono, app.last_failure))
        return views

    def unplaced(self, app_id: str) -> Unplaceable | None:
        """Why Nomad cannot place runners the app's Count asks for, from its evaluations."""
        app = self._apps.get(app_id)
        if app is None or app.unplaced is None:
            return None
        return Unplaceable(placement_detail(app, app.unplaced), self.unplaced_final(app))

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Be told when a runner fails before it became ready."""
        self._listeners.append(listener)

    def add_keep_listener(self, listener: KeepListener) -> None:
        """Be told when a runner ``stop_runner`` took stays after all (either ``replace``)."""
        self._keepers.append(listener)


def _count(job: dict[str, Any]) -> int:
    for group in job.get("TaskGroups") or []:
        if group.get("Name") == GROUP:
            return int(group.get("Count") or 0)
    return 0
