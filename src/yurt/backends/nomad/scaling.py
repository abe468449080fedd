"""The Count of each app's job: the one asked for, the one Nomad accepted, and who is stopping.

The group's Count is the target; ``POST /v1/job/:id/scale`` changes it. The count asked for
and the count Nomad last accepted are kept apart: a scale that Nomad refuses for a while (a
leader election, or a deployment of a job registered before yurt stopped making them) is
retried in the background until it lands. yurt's jobs open no deployment (``Update.MaxParallel
= 0``, see ``jobspec._update``), because Nomad refuses every scale while one is active (400 "job
scaling blocked due to active deployment", nomad/job_endpoint.go:1063-1064) and a failing one
stays active until its ProgressDeadline: a failing app could not go to zero runners, nor a
burst grow an app whose first runner still loads. Nomad
picks which allocation goes when the Count drops (the highest name index), so ``pick_stops``
lowers it only past runners the scheduler may stop. Nomad counts a failed allocation waiting to
be rescheduled against the Count like a live one, and may stop it when the Count drops.

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
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import structlog

from yurt.backends.base import KeepListener
from yurt.backends.nomad.allocs import counted, is_live, stop_order
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.evals import Unplaced
from yurt.backends.nomad.naming import GROUP
from yurt.backoff import capped_backoff
from yurt.errors import ClusterBadRequest, ClusterError, ClusterNotFound, ClusterUnavailable

log = structlog.get_logger("yurt.nomad")

_BLOCKED = "active deployment"  # Nomad: "job scaling blocked due to active deployment"
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0  # backoff of a scale or stop Nomad refuses for a while


@dataclass(eq=False)
class _App:
    """One app's job: its Counts, allocations, stopping runners, start failures and tasks."""

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
    unplaced: Unplaced | None = None  # what the evaluations say Nomad cannot place
    told: str = ""  # the failing evaluation whose callers were failed
    ask: str = ""  # what each runner asks of a node, for placement failures
    watch: asyncio.Task[None] | None = None
    evals_watch: asyncio.Task[None] | None = None
    scaler: asyncio.Task[None] | None = None
    revision: str = ""  # the payload revision the job runs
    surge: asyncio.Task[None] | None = None  # rolling a new revision (``surge``)
    surging: str = ""  # the digest of the job the surge rolls
    surge_late: bool = False  # ``surge`` is in its second stage: the app's job has its body
    surges: set[asyncio.Task[None]] = field(default_factory=set)  # every surge not yet ended
    roll_failure: str = ""  # why the last roll failed, or what keeps it from being placed


class Scaling:
    """Sends each app's Count to Nomad and keeps who is stopping (a part of ``NomadBackend``)."""

    client: NomadClient
    _keepers: list[KeepListener]

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
        waits, tries = 0, 0
        while True:
            waits, tries = waits + 1, tries + 1
            await asyncio.sleep(capped_backoff(waits, first=RETRY_FIRST_S, cap=RETRY_MAX_S))
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
            waits = 0  # a newer target: send it soon

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

    async def _stop_later(self, app: _App, runner_id: str) -> None:
        """Retry a ``stop_runner(replace=True)`` Nomad refused for now, until it lands."""
        tries = 0
        while True:
            tries += 1
            await asyncio.sleep(capped_backoff(tries, first=RETRY_FIRST_S, cap=RETRY_MAX_S))
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


def _leaving(app: _App) -> set[str]:
    """Runners a lower Count stops (asked for, or already accepted), still listed live."""
    return app.stopping - app.replacing


def _passing(exc: ClusterError) -> bool:
    """Whether Nomad refused a scale only for now: a deployment runs, or Nomad is unreachable."""
    if isinstance(exc, ClusterUnavailable):
        return True
    return isinstance(exc, ClusterBadRequest) and _BLOCKED in exc.message.lower()
