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
from yurt.backends.nomad.client import NomadClient
from yurt.backends.nomad.jobspec import STARTUP_SLACK_S, register_body
from yurt.backends.nomad.scaling import _App
from yurt.backends.nomad.watch import HealthHistory
from yurt.errors import ClusterError
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.nomad")

SURGE_SUFFIX = "-surge"
POLL_S = 0.5  # how often a surge looks at its runners


def surge_id(job_id: str) -> str:
    """The id of the job that carries an app's new revision while it rolls."""
    return job_id + SURGE_SUFFIX


def surge_job(job: dict[str, Any], count: int) -> dict[str, Any]:
    """``job`` as the surge job: its own id, ``count`` runners, the same Consul service."""
    out = copy.deepcopy(job)
    out["ID"] = out["Name"] = surge_id(job["ID"])
    for group in out["TaskGroups"]:
        group["Count"] = min(count, group["Scaling"]["Max"])
    return out


class Surge:
    """Rolls an app's new revision through a surge job (a part of ``NomadBackend``)."""

    client: NomadClient
    history: HealthHistory | None

    def _start_surge(
        self, app: _App, spec: AppSpec, job: dict[str, Any], digest: str, revision: str
    ) -> None:
        """Roll ``job`` (the new revision) in the background; a newer revision replaces it."""
        if app.surge is not None and not app.surge.done():
            if app.surging == digest:
                return
            app.surge.cancel()  # its cleanup purges the surge job before the next registers
        app.surging = digest
        app.surge = asyncio.create_task(self._surge(app, spec, job, digest, revision))

    async def _surge(
        self, app: _App, spec: AppSpec, job: dict[str, Any], digest: str, revision: str
    ) -> None:
        name = surge_id(app.job_id)
        deadline = time.monotonic() + spec.startup_timeout + STARTUP_SLACK_S
        count = max(1, app.accepted)
        try:
            await self.client.register(register_body(surge_job(job, count), preserve_counts=False))
            log.info(
                "nomad_surge_started", app=app.app_id, job=name, revision=revision, count=count
            )
            if not await self._passing(app, name, set(), count, deadline):
                log.error("nomad_surge_failed", app=app.app_id, revision=revision)
                return
            async with app.lock:
                before = {str(s.get("ID")) for s in app.allocs.values()}
                await self.client.register(register_body(job))
                app.digest, app.revision = digest, revision
            log.info("nomad_job_registered", app=app.app_id, job=app.job_id, revision=revision)
            want = min(count, max(1, app.target))
            if not await self._passing(app, app.job_id, before, want, deadline):
                log.warning("nomad_surge_ended_early", app=app.app_id, revision=revision)
        except ClusterError as exc:
            log.error("nomad_surge_failed", app=app.app_id, revision=revision, error=str(exc))
        finally:
            with contextlib.suppress(ClusterError):
                await self.client.deregister(name, purge=True)
            log.info("nomad_surge_ended", app=app.app_id, job=name)

    async def _passing(
        self, app: _App, job_id: str, old: set[str], count: int, deadline: float
    ) -> bool:
        """Whether ``count`` live runners of ``job_id`` not in ``old`` pass their checks in
        time; False at once when one of them failed."""
        while time.monotonic() < deadline:
            _, stubs = await self.client.allocations(job_id)
            new = [s for s in stubs if str(s.get("ID")) not in old]
            if any(s.get("ClientStatus") == "failed" for s in new):
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
            await asyncio.sleep(POLL_S)
        return False
