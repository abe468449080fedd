"""The cluster backend: each app is a Nomad service job, each runner one of its allocations.

The group's Count is the target; ``POST /v1/job/:id/scale`` changes it. The count asked for
and the count Nomad last accepted are kept apart: a scale that Nomad refuses for a while (a
deployment in progress, a leader election) is retried in the background until it lands. Nomad
picks which allocation goes when the Count drops (the highest name index), so ``pick_stops``
lowers it only past runners the scheduler may stop. Nomad counts a failed allocation waiting to
be rescheduled against the Count like a live one, and may stop it when the Count drops: such an
allocation is listed as a PENDING runner that is never routable (``allocs.counted``). One
blocking query loop per app follows its allocations; from them come ``runners()`` and the start
failures. Healthy runners are found through Consul (``ConsulDiscovery``), not here.

A runner ``stop_runner(replace=False)`` took is *stopping* only while a lower Count that stops
it is pending or was accepted: when Nomad refuses that Count for good, or a raise overtakes it,
or the lower Count stopped another runner, the runner stays, and the keep listeners hear of it
(the router routes to it again). Every runner an accepted lower Count stops is stopping, asked
for or not (a Count above max_concurrency brought down). A runner ``stop_runner(replace=True)``
took is stopping until Nomad stops it; while Nomad is unreachable the stop is retried in the
background, and when Nomad refuses it for good the keep listeners hear of it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from yurt.backends.base import (
    FailureListener,
    KeepListener,
    RunnerState,
    RunnerView,
    StartFailure,
)
from yurt.backends.nomad.allocs import (
    TERMINAL,
    alloc_address,
    counted,
    deployment_healthy,
    exit_detail,
    health_killed,
    is_live,
    read_failure,
    stop_order,
    stops_for,
    task_state,
    view_of,
)
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.jobspec import build_job, register_body
from yurt.backends.nomad.naming import GROUP, TASK, PayloadRef, job_id
from yurt.config import NomadConfig
from yurt.errors import ClusterBadRequest, ClusterError, ClusterNotFound, ClusterUnavailable
from yurt.packaging import PayloadHeader, read_header
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.nomad")

META_DIGEST = "yurt_job_digest"  # the job body's digest: an unchanged app is not re-registered
_BLOCKED = "active deployment"  # Nomad: "job scaling blocked due to active deployment"
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0  # backoff of a scale or stop Nomad refuses for a while


class HealthHistory(Protocol):
    """Whether a runner ever passed its health checks (``ConsulDiscovery`` is one)."""

    def was_healthy(self, app_id: str, runner_id: str) -> bool:
        """True once the runner has been healthy."""


# -- pure helpers --------------------------------------------------------------------------


def job_digest(job: dict[str, Any]) -> str:
    """A digest of the job body apart from its counts (which the scheduler owns)."""
    body = json.loads(json.dumps(job))
    for group in body.get("TaskGroups") or []:
        group.pop("Count", None)
    body.get("Meta", {}).pop(META_DIGEST, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# -- the backend ---------------------------------------------------------------------------


@dataclass(eq=False)
class _App:
    app_id: str
    job_id: str
    target: int  # the Count asked for
    accepted: int = 0  # the Count Nomad last accepted
    digest: str = ""
    allocs: dict[str, dict[str, Any]] = field(default_factory=dict)
    synced: bool = False  # the first allocation list has been read
    reported: set[tuple[str, int]] = field(default_factory=set)
    stopping: set[str] = field(default_factory=set)  # told to stop, either way
    replacing: set[str] = field(default_factory=set)  # stopped one by one: Nomad replaces them
    lowering: set[str] = field(default_factory=set)  # stopping by a Count not yet accepted
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)  # from full allocations
    failures: int = 0
    last_failure: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watch: asyncio.Task[None] | None = None
    scaler: asyncio.Task[None] | None = None


class NomadBackend:
    """Runs runners as allocations of one Nomad job per app (a ``Backend``)."""

    def __init__(
        self,
        config: NomadConfig,
        links: Callable[[str, PayloadHeader], PayloadRef],
        *,
        client: NomadClient | None = None,
        history: HealthHistory | None = None,
        machines: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.links = links
        self.machines = dict(machines or {})  # the server's changes to the machine catalog
        self.client = client or NomadClient(config)
        self._own_client = client is None
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

    async def stop(self, grace: float | None = None) -> None:
        """End the watches; the jobs and their runners stay (a restarted server adopts them)."""
        tasks = [t for a in self._apps.values() for t in (a.watch, a.scaler) if t is not None]
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
            await self.client.deregister(app.job_id, purge=True)

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
        (``nomad_count_above_max``). Should that scale be deferred (a deployment runs), the job
        is registered with the lowered Count itself rather than preserving the one above it.
        """
        data = await asyncio.to_thread(payload.read_bytes)
        header, _ = read_header(data)
        ref = self.links(app_id, header)
        name = job_id(self.config.job_prefix, app_id)
        app = self._apps.get(app_id)
        if app is None:
            app = self._apps[app_id] = _App(app_id, name, target=0)
            existing = await self.client.get_job(name)
            if existing is not None and not existing.get("Stop"):
                # Adopt the Count of a job a previous server left running.
                app.accepted = app.target = _count(existing)
                app.digest = str((existing.get("Meta") or {}).get(META_DIGEST) or "")
                log.info("nomad_job_adopted", app=app_id, job=name, count=app.target)
        async with app.lock:
            top = spec.max_concurrency
            app.target = min(app.target, top)
            if app.accepted > top:
                await self._sync(app)  # so that the runners the scale stops are marked stopping
                log.warning(
                    "nomad_count_above_max",
                    app=app_id,
                    job=name,
                    count=app.accepted,
                    max_concurrency=top,
                    stopping=stop_order(app.allocs.values())[: app.accepted - top] or None,
                )
                await self._scale(app)  # raises if Nomad refuses it for good
            job = build_job(
                app_id, spec, ref, self.config, count=app.target, machines=self.machines
            )
            digest = job_digest(job)
            if digest != app.digest:
                job["Meta"][META_DIGEST] = digest
                # Preserve Nomad's Count unless it is still above the maximum (the scale down
                # is deferred): then the job carries the lowered Count itself.
                lower, count, covered = app.accepted > top, app.target, set(app.lowering)
                reply = await self.client.register(register_body(job, preserve_counts=not lower))
                app.digest = digest
                if lower:
                    self._scale_accepted(app, count, covered)
                    if app.target != count:
                        # The target moved while the register was out (and a deferred scale may
                        # have landed before it): Nomad has ``count`` now, so send the target.
                        with contextlib.suppress(ClusterError):  # _scale_failed logged it
                            await self._scale(app)
                log.info(
                    "nomad_job_registered",
                    app=app_id,
                    job=name,
                    revision=ref.revision,
                    count=app.target,
                    eval=reply.get("EvalID"),
                    warnings=reply.get("Warnings") or None,
                )
        if app.watch is None:
            app.watch = asyncio.create_task(self._follow(app))

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

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Be told when a runner fails before it became ready."""
        self._listeners.append(listener)

    def add_keep_listener(self, listener: KeepListener) -> None:
        """Be told when a runner ``stop_runner`` took stays after all (either ``replace``)."""
        self._keepers.append(listener)

    # -- scaling ---------------------------------------------------------------------------

    async def _scale(self, app: _App, *, own: str | None = None) -> None:
        """Send the target now; ``own`` is the runner whose ``stop_runner`` gets a refusal.

        Once Nomad has accepted a Count that covers ``own``, a refusal of a later target (one
        that changed while the call was out) is no longer ``own``'s: it is not raised, and
        ``own`` stays stopping (Nomad's Count stops it).
        """
        if app.scaler is not None and not app.scaler.done():
            return  # the retry in flight sends the latest target
        landed = False  # a Count covering ``own`` was accepted
        while True:
            count, covered = app.target, set(app.lowering)
            try:
                await self.client.scale(app.job_id, GROUP, count, f"yurt: target {count}")
            except ClusterError as exc:
                if not _passing(exc):
                    self._scale_failed(app, count, exc, own=None if landed else own)
                    if landed:
                        return
                    raise
                log.info("nomad_scale_deferred", app=app.app_id, count=count, reason=str(exc))
                app.scaler = asyncio.create_task(self._scale_later(app))
                return
            self._scale_accepted(app, count, covered)
            landed = landed or (own is not None and own in covered)
            if app.target == count:  # else it changed while the call was out
                return

    async def _scale_later(self, app: _App) -> None:
        delay, tries = RETRY_FIRST_S, 0
        while True:
            await asyncio.sleep(delay)
            delay, tries = min(delay * 2, RETRY_MAX_S), tries + 1
            count, covered = app.target, set(app.lowering)
            try:
                await self.client.scale(app.job_id, GROUP, count, f"yurt: target {count}")
            except ClusterError as exc:
                if _passing(exc):
                    level = log.warning if isinstance(exc, ClusterUnavailable) else log.info
                    level("nomad_scale_retry", app=app.app_id, count=count, error=str(exc))
                    continue
                self._scale_failed(app, count, exc)
                return
            self._scale_accepted(app, count, covered)
            if app.target == count:
                log.info("nomad_scale_landed", app=app.app_id, count=count, tries=tries)
                return
            delay = RETRY_FIRST_S  # a newer target: send it soon

    def _scale_accepted(self, app: _App, count: int, covered: set[str]) -> None:
        """Nomad took ``count``; of the lowerings it ``covered``, those it does not stop stay.

        Going from the Count Nomad had to ``count`` stops that many of the allocations it
        counts, the highest name indexes first: each of them is stopping now, asked for or not
        (a Count above max_concurrency brought down stops busy runners too), so that neither
        the scheduler nor the router takes it for a runner that stays. A covered runner not
        among them (a raise overtook its lowering, or a higher index went instead) is not
        stopping: the keep listeners hear.
        """
        before, app.accepted = app.accepted, count
        earlier = app.stopping - app.replacing - app.lowering  # Nomad's Count left them out
        app.lowering -= covered
        kept_by_nomad = [r for r in stop_order(app.allocs.values()) if r not in earlier]
        going = set(kept_by_nomad[: max(0, before - count)])
        unasked = going - app.stopping
        if unasked:
            log.info("nomad_count_stops", app=app.app_id, count=count, runners=sorted(unasked))
        app.stopping |= going
        stays = {r for r in covered - going if r in kept_by_nomad}
        self._keep(app, stays, why=f"Nomad took Count {count} (was {before})")

    def _scale_failed(
        self, app: _App, count: int, exc: ClusterError, *, own: str | None = None
    ) -> None:
        """Nomad refused the Count for good: go back to the one it has, so it is asked again.

        The runners the refused Count would have stopped stay. ``own`` is the one whose
        ``stop_runner`` raises (its caller knows); the keep listeners hear of the others.
        """
        log.error(
            "nomad_scale_failed",
            app=app.app_id,
            count=count,
            kept=app.accepted,
            error=str(exc),
            runners_kept=sorted(app.lowering) or None,
        )
        app.target = app.accepted
        pending = set(app.lowering)
        app.stopping -= pending
        app.lowering.clear()
        self._keep(app, pending - {own}, why=f"Nomad refused Count {count}")

    async def _sync(self, app: _App) -> None:
        """Read the allocations once if they are not followed yet (a job just adopted)."""
        if app.synced:
            return
        try:
            _, listed = await self.client.allocations(app.job_id)
        except ClusterError as exc:
            log.debug("nomad_allocs_unreadable", app=app.app_id, error=str(exc))
            return
        self._observe(app, [s for s in listed if s.get("TaskGroup", GROUP) == GROUP])

    async def _stop_later(self, app: _App, runner_id: str) -> None:
        """Retry a ``stop_runner(replace=True)`` Nomad refused for now, until it lands."""
        delay, tries = RETRY_FIRST_S, 0
        while True:
            await asyncio.sleep(delay)
            delay, tries = min(delay * 2, RETRY_MAX_S), tries + 1
            stub = app.allocs.get(runner_id)
            if runner_id not in app.replacing or stub is None or not is_live(stub):
                return  # gone, stopping already, or kept meanwhile
            try:
                await self.client.stop_allocation(runner_id)
            except ClusterNotFound:
                return
            except ClusterUnavailable as exc:
                log.warning("nomad_stop_retry", app=app.app_id, runner=runner_id, error=str(exc))
                continue
            except ClusterError as exc:
                self._stop_refused(app, runner_id, exc)
                return
            log.info("nomad_stop_landed", app=app.app_id, runner=runner_id, tries=tries)
            return

    def _stop_refused(self, app: _App, runner_id: str, exc: ClusterError) -> None:
        """Nomad refused for good to stop the runner: it stays, and the keep listeners hear."""
        log.error("nomad_stop_failed", app=app.app_id, runner=runner_id, error=str(exc))
        self._keep(app, {runner_id}, why=f"Nomad refused to stop it: {exc}")

    def _keep(self, app: _App, runners: Collection[str], *, why: str) -> None:
        """These runners, told to stop, stay after all: no longer stopping; say so."""
        for runner_id in sorted(runners):
            app.stopping.discard(runner_id)
            app.replacing.discard(runner_id)
            app.lowering.discard(runner_id)
            log.info("runner_kept", app=app.app_id, runner=runner_id, why=why)
            for listener in self._keepers:
                try:
                    listener(app.app_id, runner_id)
                except Exception:
                    log.exception("keep_listener_failed", app=app.app_id, runner=runner_id)

    # -- following allocations -------------------------------------------------------------

    async def _follow(self, app: _App) -> None:
        index, backoff = 0, 0.25
        while True:
            try:
                new_index, stubs = await self.client.allocations(app.job_id, index=index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch must outlive any one bad reply
                log.warning(
                    "nomad_watch_failed",
                    app=app.app_id,
                    error=str(exc) or repr(exc),
                    retry_s=backoff,
                    exc_info=not isinstance(exc, ClusterError),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.25
            if new_index < index:
                # Nomad's index went backwards (a restored or new cluster): start again from 0.
                log.info("nomad_index_reset", app=app.app_id, old=index, new=new_index)
                index = 0
            elif new_index < 1:
                await asyncio.sleep(backoff)  # no index to block on: don't spin
            else:
                index = new_index
            self._observe(app, [s for s in stubs if s.get("TaskGroup", GROUP) == GROUP])

    def _observe(self, app: _App, stubs: list[dict[str, Any]]) -> None:
        app.allocs = {str(s["ID"]): s for s in stubs}
        app.stopping &= app.allocs.keys()
        app.replacing &= app.allocs.keys()
        app.lowering &= app.allocs.keys()
        self._release_spared(app)
        app.reported = {k for k in app.reported if k[0] in app.allocs}
        app.ports = {k: v for k, v in app.ports.items() if k in app.allocs}
        for rid, stub in app.allocs.items():
            live = stub.get("ClientStatus") not in TERMINAL
            if live and rid not in app.ports and not alloc_address(stub)[1]:
                # Stubs may come without AllocatedResources: read the ports once.
                app.ports[rid] = ("", 0)
                self._chore(self._read_ports(app, rid))
            if self._healthy(app, rid, stub):
                app.failures, app.last_failure = 0, ""
                continue
            restarts = int(task_state(stub).get("Restarts") or 0)
            # Ended on its own: not one we (or a lower Count) told to stop.
            ended = (
                stub.get("ClientStatus") in TERMINAL
                and stub.get("DesiredStatus") == "run"
                and rid not in app.stopping
            )
            keys = [(rid, n) for n in range(1, restarts + 1)]
            if ended:
                keys.append((rid, -1))
            for key in keys:
                if key in app.reported:
                    continue
                app.reported.add(key)
                if app.synced:  # failures from before we looked are history, not news
                    self._chore(self._start_failed(app, rid, stub))
        app.synced = True

    def _release_spared(self, app: _App) -> None:
        """Runners an accepted lower Count did not stop, once Nomad runs no more than its Count.

        A raise can land before Nomad acts on a lower Count it took earlier (Nomad's scheduler
        reads the job as it is by then); a runner still running when Nomad is down to the Count
        it accepted is not stopping any more. What Nomad holds against its Count includes the
        failed allocations waiting to be rescheduled: one that fails before Nomad acts on the
        lower Count does not make the runners it stops look spared.
        """
        held = {rid for rid, stub in app.allocs.items() if counted(stub)}
        spared = (app.stopping - app.replacing - app.lowering) & held
        if spared and len(held) <= app.accepted:
            self._keep(app, spared, why=f"Nomad holds {len(held)} of Count {app.accepted}")

    async def _read_ports(self, app: _App, runner_id: str) -> None:
        try:
            address = alloc_address(await self.client.allocation(runner_id))
        except ClusterError as exc:
            log.debug("nomad_alloc_unreadable", app=app.app_id, runner=runner_id, error=str(exc))
            address = ("", 0)
        if address[1]:
            app.ports[runner_id] = address
        else:
            app.ports.pop(runner_id, None)  # try again on the next reply

    def _healthy(self, app: _App, runner_id: str, stub: dict[str, Any]) -> bool:
        if deployment_healthy(stub):
            return True
        return self.history is not None and self.history.was_healthy(app.app_id, runner_id)

    async def _start_failed(self, app: _App, runner_id: str, stub: dict[str, Any]) -> None:
        try:
            tail = await self.client.task_log_tail(runner_id, TASK, "stderr")
        except ClusterError as exc:
            log.debug("nomad_log_unreadable", app=app.app_id, runner=runner_id, error=str(exc))
            tail = ""
        found = read_failure(tail)
        kind, message = found if found else ("exited", exit_detail(stub))
        if health_killed(stub) and kind not in ("payload", "setup"):
            kind = "startup_timeout"
            message = f"runner did not pass its health check within its grace: {message}"
        app.failures += 1
        app.last_failure = message
        error_type = "startup_timeout" if kind == "startup_timeout" else "runner_scheduling_failure"
        log.warning(
            "runner_start_failed",
            app=app.app_id,
            runner=runner_id,
            kind=kind,
            error=message,
            failures=app.failures,
        )
        failure = StartFailure(
            app.app_id, runner_id, error_type, f"{message} (nomad alloc logs {runner_id})"
        )
        for listener in self._listeners:
            try:
                listener(failure)
            except Exception:
                log.exception("failure_listener_failed", app=app.app_id, runner=runner_id)

    def _chore(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)


def _leaving(app: _App) -> set[str]:
    """Runners a lower Count stops (asked for, or already accepted), still listed live."""
    return app.stopping - app.replacing


def _passing(exc: ClusterError) -> bool:
    """Whether Nomad refused a scale only for now: a deployment runs, or Nomad is unreachable."""
    if isinstance(exc, ClusterUnavailable):
        return True
    return isinstance(exc, ClusterBadRequest) and _BLOCKED in exc.message.lower()


def _count(job: dict[str, Any]) -> int:
    for group in job.get("TaskGroups") or []:
        if group.get("Name") == GROUP:
            return int(group.get("Count") or 0)
    return 0
