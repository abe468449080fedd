"""A redeploy without a gap: the new revision's runners serve before the old ones go.

yurt's jobs open no Nomad deployment (``jobspec._update``), so Nomad replaces every runner of a
re-registered job at once. A new revision of an app with runners is therefore rolled here, as
the local backend's surge does: a second job (``<job>-surge``) runs the new revision at the
Count Nomad has; once its runners have passed their checks the app's job is registered with
the new revision and, once the runners Nomad places for it have passed theirs too, the surge
job is stopped and purged. Both jobs register the same Consul service, so the router routes to
whichever runners pass. A surge whose runners fail or do not pass within the app's startup
time changes nothing: the old revision keeps serving, and the next ``ensure_app`` tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

import structlog

from yurt.backends.nomad.allocs import is_live
from yurt.backends.nomad.appenv import secrets_template
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.evals import unplaced
from yurt.backends.nomad.jobspec import STARTUP_SLACK_S, register_body
from yurt.backends.nomad.naming import GROUP, SURGE_SUFFIX
from yurt.backends.nomad.scaling import _App
from yurt.backends.nomad.secrets import JobVariables
from yurt.backends.nomad.watch import HealthHistory, placement_detail
from yurt.errors import ClusterError
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.nomad")

POLL_S = 0.5  # how often a surge looks at its runners


def surge_id(job_id: str) -> str:
    """The id of the job that carries an app's new revision while it rolls."""
    return job_id + SURGE_SUFFIX


def surge_job(job: dict[str, Any], count: int) -> dict[str, Any]:
    """``job`` as the surge job: its own id, ``count`` runners, the same Consul service, and
    its own Variable (a task may read its own job's only, ``appenv``)."""
    out = copy.deepcopy(job)
    out["ID"] = out["Name"] = surge_id(job["ID"])
    for group in out["TaskGroups"]:
        group["Count"] = min(count, group["Scaling"]["Max"])
        for task in group.get("Tasks") or []:
            if task.get("Templates"):
                task["Templates"] = [secrets_template(out["ID"])]
    return out


class Surge:
    """Rolls an app's new job body through a surge job (a part of ``NomadBackend``).

    The roll has two stages, each with its own deadline (the app's startup_timeout plus
    ``surge_slack_s``): the surge's runners passing, then, once the app's job is registered
    with the new body, the app's new runners passing. In the second stage a failed runner does
    not end the roll (Nomad reschedules it); the surge job is purged once the app's new runners
    pass, or when that stage's deadline passes (logged, ``nomad_surge_outlasted``).

    A newer body cancels a roll in its first stage (the old body still serves from the app's
    job) and lets one in its second stage finish (the app's job already runs the newer body's
    predecessor and its runners still load: the surge's runners serve meanwhile). Either way
    the newer roll waits for every earlier one to end, so that an earlier purge of the surge
    job never lands after the newer one registered it.
    """

    client: NomadClient
    history: HealthHistory | None
    _apps: dict[str, _App]
    variables: JobVariables
    surge_slack_s: float = STARTUP_SLACK_S  # added to startup_timeout for each stage

    def _start_surge(
        self,
        app: _App,
        spec: AppSpec,
        job: dict[str, Any],
        digest: str,
        revision: str,
        token: str,
    ) -> None:
        """Roll ``job`` in the background, after every earlier roll of the app has ended.

        ``token`` is the revision's payload token, for the surge job's Variable and then the
        app's job's, each written before its job is registered with ``job``."""
        if app.surge is not None and not app.surge.done():
            if app.surging == digest:
                return
            self._cancel_surge(app)
        earlier = {t for t in app.surges if not t.done()}
        app.surging, app.surge_late = digest, False
        task = asyncio.create_task(self._surge(app, spec, job, (digest, revision, token), earlier))
        app.surge = task
        app.surges.add(task)
        task.add_done_callback(app.surges.discard)

    @staticmethod
    def _cancel_surge(app: _App) -> None:
        """Cancel the app's roll while in its first stage; one in its second runs on."""
        if app.surge is not None and not app.surge.done() and not app.surge_late:
            app.surge.cancel()

    @staticmethod
    async def _end_surges(app: _App) -> None:
        """Cancel every roll of the app, either stage, and wait until each has ended."""
        tasks = [t for t in app.surges if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _surge(
        self,
        app: _App,
        spec: AppSpec,
        job: dict[str, Any],
        rolled: tuple[str, str, str],
        earlier: set[asyncio.Task[None]],
    ) -> None:
        digest, revision, token = rolled
        if earlier:
            # asyncio.wait, not gather: a cancel of this roll must not cancel the earlier ones.
            await asyncio.wait(earlier)
        name = surge_id(app.job_id)
        count = max(1, app.accepted)
        try:
            await self.variables.write(name, token)  # after every earlier roll dropped it
            await self.client.register(register_body(surge_job(job, count), preserve_counts=False))
            version = await self._version(name)
            log.info(
                "nomad_surge_started", app=app.app_id, job=name, revision=revision, count=count
            )
            deadline = time.monotonic() + spec.startup_timeout + self.surge_slack_s
            if not await self._passing(app, name, version, count, deadline, give_up=True):
                why = app.roll_failure or "its runners failed or did not pass in time"
                app.roll_failure = f"revision {revision} was not rolled out: {why}"
                log.error("nomad_surge_failed", app=app.app_id, revision=revision, reason=why)
                return
            async with app.lock:
                if app.surge is asyncio.current_task():
                    app.surge_late = True  # from here on a newer body waits, not cancels
                await self.variables.write(app.job_id, token)
                await self.client.register(register_body(job))
                app.digest, app.revision, app.roll_failure = digest, revision, ""
                version = await self._version(app.job_id)
            log.info("nomad_job_registered", app=app.app_id, job=app.job_id, revision=revision)
            want = min(count, max(1, app.target))
            deadline = time.monotonic() + spec.startup_timeout + self.surge_slack_s
            if not await self._passing(app, app.job_id, version, want, deadline, give_up=False):
                log.warning(
                    "nomad_surge_outlasted",
                    app=app.app_id,
                    revision=revision,
                    waited_s=spec.startup_timeout + self.surge_slack_s,
                )
        except ClusterError as exc:
            app.roll_failure = f"revision {revision} was not rolled out: {exc}"
            log.error("nomad_surge_failed", app=app.app_id, revision=revision, error=str(exc))
        finally:
            with contextlib.suppress(ClusterError):
                await self.client.deregister(name, purge=True)
                await self.variables.drop(name)
            log.info("nomad_surge_ended", app=app.app_id, job=name)

    async def _version(self, job_id: str) -> int:
        """The job's version right after a register: its runners are those of this version on
        (an in-place update, such as a Count, raises the version of the allocations too)."""
        found = await self.client.get_job(job_id)
        return int((found or {}).get("Version") or 0)

    async def _passing(
        self, app: _App, job_id: str, version: int, count: int, deadline: float, *, give_up: bool
    ) -> bool:
        """Whether ``count`` live runners of ``job_id``, of ``version`` or later, pass their
        checks before ``deadline``. With ``give_up`` one that failed ends the wait at once,
        and so does a runner no node can take (``_unplaceable``); without, a failed one is left
        to Nomad to reschedule.
        """
        if give_up:
            app.roll_failure = ""
        while time.monotonic() < deadline:
            _, stubs = await self.client.allocations(job_id)
            new = [s for s in stubs if int(s.get("JobVersion") or 0) >= version]
            if give_up and any(s.get("ClientStatus") == "failed" for s in new):
                return False
            passing = [
                s
                for s in new
                if is_live(s)
                and self.history is not None
                and self.history.was_healthy(app.app_id, str(s.get("ID")))
            ]
            if len(passing) >= count:
                return True
            if give_up and await self._unplaceable(app, job_id):
                return False
            await asyncio.sleep(POLL_S)
        return False

    async def _unplaceable(self, app: _App, job_id: str) -> bool:
        """Whether no node can take a runner of the surge job ``job_id`` until the cluster
        changes. Nomad then keeps a blocked evaluation and nothing says so: the reason is
        logged once (``nomad_surge_unplaced``) and kept for ``roll_failure``; a surge that
        only waits for room (nodes full) goes on waiting until its deadline."""
        _, evaluations = await self.client.evaluations(job_id)
        found = unplaced(evaluations, GROUP)
        if found is None:
            return False
        detail = placement_detail(app, found)
        if app.roll_failure != detail:
            app.roll_failure = detail
            log.warning(
                "nomad_surge_unplaced",
                app=app.app_id,
                job=job_id,
                reasons=found.reasons,
                final=found.final,
                ask=app.ask,
                eval=found.eval_id,
            )
        return found.final

    def roll_failure(self, app_id: str) -> str | None:
        """Why the app's last roll did not happen, or what keeps the one under way from being
        placed; None once a roll registered the app's job (or none failed)."""
        app = self._apps.get(app_id)
        return (app.roll_failure or None) if app is not None else None
