"""The Nomad backend against the Nomad and Consul doubles: real HTTP, real runner processes."""

from __future__ import annotations

import asyncio
import copy
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from yurt.app import App
from yurt.backends.base import RunnerState, StartFailure
from yurt.backends.nomad.backend import NomadBackend
from yurt.backends.nomad.naming import PayloadRef, job_id
from yurt.config import ConsulConfig, NomadConfig
from yurt.discovery.consul import ConsulDiscovery
from yurt.errors import ClusterUnauthorized
from yurt.packaging import PayloadHeader, read_header, write_payload
from yurt.spec import build_spec

from doubles import ConsulDouble, NomadDouble
from nomad_apps import Broken, Loading, LoadingB, LoadingC, OnH100, Slow, SlowB, Tiny
from support import wait_until

APP = "owner/tiny"
JOB = job_id("yurt", APP)


class PayloadServer:
    """Serves payload files to runners that show the revision's bearer token."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/payloads/{sha}", self.serve)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def serve(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        if request.headers.get("Authorization") != f"Bearer tok-{sha[:12]}":
            return web.Response(status=403)
        path = self.directory / f"{sha}.yurt"
        return web.FileResponse(path) if path.exists() else web.Response(status=404)

    def links(self, app_id: str, header: PayloadHeader) -> PayloadRef:
        return PayloadRef(
            url=f"{self.url}/payloads/{header.sha256}",
            sha256=header.sha256,
            token=f"tok-{header.revision}",
            revision=header.revision,
        )


@dataclass
class Cluster:
    consul: ConsulDouble
    nomad: NomadDouble
    payloads: PayloadServer
    discovery: ConsulDiscovery
    tmp: Path

    def config(self, token: str | None = None) -> NomadConfig:
        return NomadConfig(
            addr=self.nomad.url,
            token=token,
            python=sys.executable,
            check_interval=1.0,
            check_timeout=1.0,
            restart_delay=0.5,
            blocking_wait=5.0,
            retries=2,
        )

    def backend(self, token: str | None = None) -> NomadBackend:
        return NomadBackend(self.config(token), self.payloads.links, history=self.discovery)

    def payload(self, cls: type[App]) -> Path:
        _, path = write_payload(cls, self.tmp / "payloads")
        return path

    def running(self) -> list[str]:
        """Ids of the job's live, running allocations, by name index."""
        return [a.id for a in self.nomad.running(JOB)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    consul = ConsulDouble()
    await consul.start()
    nomad = NomadDouble(consul, tmp_path / "nomad", poll=0.2)
    await nomad.start()
    payloads = PayloadServer(tmp_path / "payloads")
    await payloads.start()
    discovery = ConsulDiscovery(ConsulConfig(addr=consul.url, blocking_wait=5), "yurt")
    await discovery.start()
    try:
        yield Cluster(consul, nomad, payloads, discovery, tmp_path)
        # The double's stop() can hang on an allocation still stopping or restarting: let every
        # runner process end first (the tests deregister their job).
        await wait_until(
            lambda: all(
                a.terminal and (a.proc is None or a.proc.returncode is not None)
                for a in nomad.allocations(JOB)
            ),
            what="every runner process ended",
        )
    finally:
        await discovery.close()
        await nomad.stop()  # kills every runner process it started
        await payloads.stop()
        await consul.stop()


def registrations(nomad: NomadDouble) -> int:
    return sum(1 for m, p in nomad.requests if m in ("POST", "PUT") and p == "/v1/jobs")


async def test_scale_up_and_down_highest_index_first(cluster: Cluster) -> None:
    """Runners come up healthy; scaling down stops the highest index, and no deployment of
    the scale to 2 holds the lower Count back."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Tiny), cluster.payload(Tiny))
        assert cluster.nomad.jobs[JOB]["TaskGroups"][0]["Count"] == 0
        await backend.set_target(APP, 2)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 2, what="2 healthy")
        await wait_until(
            lambda: sorted(v.state for v in backend.runners(APP)) == [RunnerState.IDLE] * 2,
            what="backend lists two idle runners",
        )
        by_index = cluster.running()
        assert {v.port for v in backend.runners(APP)} == {
            e.port for e in cluster.discovery.healthy(APP)
        }
        assert backend.pick_stops(APP, by_index) == [by_index[1], by_index[0]]
        assert backend.pick_stops(APP, [by_index[0]]) == []  # index 1 is busy: it blocks
        with capture_logs() as logs:
            await backend.stop_runner(APP, by_index[1], reason="keep_alive", replace=False)
            assert backend.target(APP) == 1
            await wait_until(lambda: cluster.running() == [by_index[0]], what="index 1 stopped")
        events = [e["event"] for e in logs]
        assert "nomad_scale_deferred" not in events
        assert "nomad_scale_failed" not in events
        assert cluster.nomad.jobs[JOB]["TaskGroups"][0]["Count"] == 1
        await wait_until(
            lambda: [e.runner_id for e in cluster.discovery.healthy(APP)] == [by_index[0]],
            what="discovery drops the stopped runner",
        )
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_stop_runner_with_replace(cluster: Cluster) -> None:
    """Stopping one runner with replace keeps the count: a new allocation takes its place."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Tiny), cluster.payload(Tiny))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.running()) == 1, what="one runner")
        first = cluster.running()[0]
        await wait_until(lambda: any(v.runner_id == first for v in backend.runners(APP)))
        await backend.stop_runner(APP, first, reason="503", replace=True)
        assert backend.target(APP) == 1
        await wait_until(
            lambda: cluster.running() and cluster.running() != [first], what="a replacement"
        )
        await wait_until(
            lambda: [e.runner_id for e in cluster.discovery.healthy(APP)] == cluster.running(),
            what="the replacement healthy, the old one gone",
        )
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_ensure_app_idempotent_and_restart_adopts_count(cluster: Cluster) -> None:
    """Same app twice registers once; a restarted backend keeps the job's Count and runners."""
    spec, payload = build_spec(Tiny), cluster.payload(Tiny)
    backend = cluster.backend()
    await backend.start()
    await backend.ensure_app(APP, spec, payload)
    await backend.ensure_app(APP, spec, payload)
    assert registrations(cluster.nomad) == 1
    await backend.set_target(APP, 1)
    await wait_until(lambda: len(cluster.running()) == 1, what="one runner")
    runner = cluster.running()[0]
    await backend.stop()  # a server going down leaves its runners running

    again = cluster.backend()
    await again.start()
    try:
        await again.ensure_app(APP, spec, payload)
        assert again.target(APP) == 1
        assert registrations(cluster.nomad) == 1
        await wait_until(lambda: [v.runner_id for v in again.runners(APP)] == [runner])
        assert cluster.running() == [runner]
    finally:
        await again.deregister_all()
        await again.stop()


def deploying(nomad: NomadDouble) -> bool:
    return any(d["Status"] == "running" for d in nomad.deployments(JOB))


async def register_as_before(nomad: NomadDouble) -> None:
    """Register the job again as yurt did when it made deployments (MaxParallel 1), with a
    MinHealthyTime that keeps the deployment of the in-place update running for a minute."""
    job = copy.deepcopy(nomad.jobs[JOB])
    job["TaskGroups"][0]["Update"].update(MaxParallel=1, MinHealthyTime=60 * 10**9)
    body = {"Job": job, "PreserveCounts": True}
    async with aiohttp.ClientSession() as s, s.post(f"{nomad.url}/v1/jobs", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def test_raise_overtaking_a_blocked_lowering_keeps_the_runner(cluster: Cluster) -> None:
    """A lowering Nomad refuses for now (no leader), overtaken by a raise: the runner stays."""
    backend = cluster.backend()
    kept: list[tuple[str, str]] = []
    backend.add_keep_listener(lambda app_id, runner_id: kept.append((app_id, runner_id)))
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Tiny), cluster.payload(Tiny))
        await backend.set_target(APP, 2)
        await wait_until(lambda: len(cluster.running()) == 2, what="two runners")
        by_index = cluster.running()
        await wait_until(lambda: {v.runner_id for v in backend.runners(APP)} == set(by_index))
        with capture_logs() as logs:
            cluster.nomad.leaderless = True
            await backend.stop_runner(APP, by_index[1], reason="keep_alive", replace=False)
            assert "nomad_scale_deferred" in [e["event"] for e in logs]
            await backend.set_target(APP, 2)  # demand is back before Nomad answers again
            cluster.nomad.leaderless = False
            await wait_until(lambda: kept, what="the runner reported kept")
        assert kept == [(APP, by_index[1])]
        assert "nomad_scale_failed" not in [e["event"] for e in logs]
        assert cluster.nomad.jobs[JOB]["TaskGroups"][0]["Count"] == 2
        assert cluster.running() == by_index
        states = {v.runner_id: v.state for v in backend.runners(APP)}
        assert states[by_index[1]] != RunnerState.DRAINING
    finally:
        cluster.nomad.leaderless = False
        await backend.deregister_all()
        await backend.stop()


@pytest.mark.parametrize("settled", [True, False], ids=["deployed", "deploying"])
async def test_restart_with_a_lower_max_lowers_the_count_first(
    cluster: Cluster, settled: bool
) -> None:
    """A job adopted at Count 2 by a server whose app now allows 1 runs 1, index 0.

    The Count goes down before the job is registered again, or, while a deployment (of a job
    an older yurt registered) still blocks the scale, with the registration itself: Nomad
    never keeps a Count above the new Scaling.Max, and the backend's target is Nomad's Count.
    """
    spec, payload = build_spec(Tiny), cluster.payload(Tiny)
    backend = cluster.backend()
    await backend.start()
    await backend.ensure_app(APP, spec, payload)
    await backend.set_target(APP, 2)
    await wait_until(lambda: len(cluster.running()) == 2, what="two runners")
    first = cluster.running()[0]
    await backend.stop()
    if not settled:
        await register_as_before(cluster.nomad)
        assert deploying(cluster.nomad)

    again = cluster.backend()
    await again.start()
    try:
        before = len(cluster.nomad.requests)
        with capture_logs() as logs:
            await again.ensure_app(APP, spec.model_copy(update={"max_concurrency": 1}), payload)
            if settled:
                # Once the Count is down, the new body (a lower Scaling.Max) rolls through a
                # surge: the job's Meta changes, so Nomad replaces the runner.
                await wait_until(
                    lambda: "nomad_surge_ended" in [e["event"] for e in logs],
                    what="the surge to end",
                )
        group = cluster.nomad.jobs[JOB]["TaskGroups"][0]
        assert (group["Count"], group["Scaling"]["Max"]) == (1, 1)
        assert again.target(APP) == 1
        events = [e["event"] for e in logs]
        assert "nomad_count_above_max" in events
        writes = [
            p
            for m, p in cluster.nomad.requests[before:]
            if m in ("POST", "PUT") and not p.startswith("/v1/var/")  # the job's Variable
        ]
        assert writes[:2] == [f"/v1/job/{JOB}/scale", "/v1/jobs"]
        assert ("nomad_scale_deferred" in events) is not settled
        assert not deploying(cluster.nomad)  # the registration cancelled it
        await wait_until(
            lambda: [a.index for a in cluster.nomad.running(JOB)] == [0], what="index 0 alone"
        )
        # The new body changed the job's Meta: Nomad replaced the runner either way.
        assert cluster.running() != [first]
        await wait_until(lambda: [v.runner_id for v in again.runners(APP)] == cluster.running())
        only = cluster.running()
        await again.set_target(APP, 1)  # no lowering in disguise
        assert cluster.running() == only
    finally:
        await again.deregister_all()
        await again.stop()


async def test_start_failure_is_reported_from_the_runner_log(cluster: Cluster) -> None:
    """A runner failing setup() is a StartFailure with the runner's own reason."""
    failures: list[StartFailure] = []
    backend = cluster.backend()
    backend.add_failure_listener(failures.append)
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Broken), cluster.payload(Broken))
        await backend.set_target(APP, 1)
        await wait_until(lambda: failures, what="a start failure")
        failure = failures[0]
        assert failure.app_id == APP
        assert failure.error_type == "runner_scheduling_failure"
        assert "no weights here" in failure.detail
        assert failure.runner_id in {a.id for a in cluster.nomad.allocations(JOB)}
        await wait_until(
            lambda: any(v.state == RunnerState.CRASH_BACKOFF for v in backend.runners(APP)),
            what="crash backoff listed",
        )
        # One report per task restart or end (RestartPolicy Attempts 2): never more.
        assert len(failures) <= len(cluster.nomad.allocations(JOB)) * 3
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_bad_token_is_a_clear_error(tmp_path: Path) -> None:
    """A token Nomad refuses fails start() with ClusterUnauthorized naming the setting."""
    nomad = NomadDouble(None, tmp_path / "nomad", token="secret")
    await nomad.start()
    backend = NomadBackend(
        NomadConfig(addr=nomad.url, token="wrong", python=sys.executable),
        lambda app_id, header: PayloadRef("http://x/", header.sha256, "t", header.revision),
    )
    try:
        with pytest.raises(ClusterUnauthorized, match=r"NomadConfig\.token") as info:
            await backend.start()
        assert info.value.status == 403
        assert "ACL token not found" in str(info.value)
    finally:
        await backend.stop()
        await nomad.stop()


async def test_a_failing_app_scales_to_zero_at_once(cluster: Cluster) -> None:
    """An app whose setup() raises goes to Count 0 when asked, no deployment in the way.

    With a deployment (MaxParallel > 0 and Nomad's default progress deadline) the failed
    runner is rescheduled and the deployment stays active for minutes, refusing the scale.
    """
    failures: list[StartFailure] = []
    backend = cluster.backend()
    backend.add_failure_listener(failures.append)
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Broken), cluster.payload(Broken))
        await backend.set_target(APP, 1)
        await wait_until(lambda: failures, what="a start failure")
        await wait_until(
            lambda: any(a.client_status == "failed" for a in cluster.nomad.allocations(JOB)),
            what="the allocation failed past its restarts",
        )
        with capture_logs() as logs:
            await backend.set_target(APP, 0)
        assert "nomad_scale_deferred" not in [e["event"] for e in logs]
        assert cluster.nomad.jobs[JOB]["TaskGroups"][0]["Count"] == 0
        assert not [d for d in cluster.nomad.deployments(JOB) if d["Status"] == "running"]
        await wait_until(
            lambda: not any(a.live for a in cluster.nomad.allocations(JOB)),
            what="no allocation left to run",
        )
        await wait_until(
            lambda: (
                not backend.runners(APP)
                or all(v.state == RunnerState.CRASH_BACKOFF for v in backend.runners(APP))
            ),
            what="no runner listed",
        )
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_a_new_revision_that_cannot_start_leaves_the_old_one_serving(
    cluster: Cluster,
) -> None:
    """A redeploy whose runners fail in setup() changes nothing: the old runner stays."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Tiny), cluster.payload(Tiny))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        [runner] = cluster.running()
        revision = cluster.nomad.jobs[JOB]["Meta"]["yurt_revision"]
        with capture_logs() as logs:
            await backend.ensure_app(APP, build_spec(Broken), cluster.payload(Broken))
            await wait_until(
                lambda: "nomad_surge_ended" in [e["event"] for e in logs],
                what="the surge to give up",
            )
        assert "nomad_surge_failed" in [e["event"] for e in logs]
        assert cluster.nomad.jobs[JOB]["Meta"]["yurt_revision"] == revision
        assert cluster.running() == [runner]
        assert not cluster.nomad.running(JOB + "-surge")
        assert [e.runner_id for e in cluster.discovery.healthy(APP)] == [runner]
    finally:
        await backend.deregister_all()
        await backend.stop()


class GapWatch:
    """Samples the app's healthy runners in the background; ``gaps`` counts empty samples."""

    def __init__(self, discovery: ConsulDiscovery) -> None:
        self.discovery = discovery
        self.gaps = 0
        self.samples = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples += 1
            if not self.discovery.healthy(APP):
                self.gaps += 1
            await asyncio.sleep(0.05)

    def __enter__(self) -> GapWatch:
        self.task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


async def test_a_changed_job_body_of_the_same_revision_rolls_without_a_gap(
    cluster: Cluster,
) -> None:
    """A change of the job body that is no new revision (here max_concurrency) is rolled
    through a surge too: the old runner serves until the new one passes."""
    spec, payload = build_spec(Tiny), cluster.payload(Tiny)
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, spec, payload)
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        [runner] = cluster.running()
        with capture_logs() as logs, GapWatch(cluster.discovery) as watch:
            await backend.ensure_app(APP, spec.model_copy(update={"max_concurrency": 3}), payload)
            await wait_until(
                lambda: "nomad_surge_ended" in [e["event"] for e in logs],
                what="the surge to end",
            )
            await wait_until(
                lambda: (
                    [e.runner_id for e in cluster.discovery.healthy(APP)] == cluster.running()
                    and cluster.running() != [runner]
                ),
                what="the app's new runner alone serving",
            )
        assert "nomad_surge_started" in [e["event"] for e in logs]
        assert watch.samples > 10 and watch.gaps == 0
        assert cluster.nomad.jobs[JOB]["TaskGroups"][0]["Scaling"]["Max"] == 3
        assert not cluster.nomad.running(JOB + "-surge")
    finally:
        await backend.deregister_all()
        await backend.stop()


def revision_in(payload: Path) -> str:
    return read_header(payload.read_bytes())[0].revision


def revision_of(nomad: NomadDouble) -> str:
    return str(nomad.jobs[JOB]["Meta"]["yurt_revision"])


async def test_each_stage_of_a_roll_has_its_own_deadline(cluster: Cluster) -> None:
    """The app's new runners get a whole startup time of their own: the surge's runners serve
    until they pass, though both stages together take longer than one startup time."""
    backend = cluster.backend()
    backend.surge_slack_s = 2.0  # each stage may take 15 s; each takes about 9 s here
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Slow), cluster.payload(Slow))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        with capture_logs() as logs, GapWatch(cluster.discovery) as watch:
            await backend.ensure_app(APP, build_spec(SlowB), cluster.payload(SlowB))
            await wait_until(
                lambda: "nomad_surge_ended" in [e["event"] for e in logs],
                what="the surge to end",
            )
        events = [e["event"] for e in logs]
        assert "nomad_job_registered" in events
        assert "nomad_surge_outlasted" not in events and "nomad_surge_failed" not in events
        # The surge ended once the app's own new runner passed: nobody went without a runner.
        assert watch.samples > 10 and watch.gaps == 0
        await wait_until(
            lambda: [e.runner_id for e in cluster.discovery.healthy(APP)] == cluster.running(),
            what="the app's new runner alone serving",
        )
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_a_newer_deploy_waits_for_the_purge_of_the_surge_it_cancels(
    cluster: Cluster,
) -> None:
    """A deploy cancelling a surge still starting registers its own surge only once the
    cancelled one's purge is done, so that purge never takes the newer surge away."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Loading), cluster.payload(Loading))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        # The cancelled surge's purge lands while the newer surge's runners load (about 4 s).
        cluster.nomad.delays[("DELETE", f"/v1/job/{JOB}-surge")] = 1.5
        newest = cluster.payload(LoadingC)
        with capture_logs() as logs:
            await backend.ensure_app(APP, build_spec(LoadingB), cluster.payload(LoadingB))
            await backend.ensure_app(APP, build_spec(LoadingC), newest)
            await wait_until(
                lambda: (
                    revision_of(cluster.nomad) == revision_in(newest)
                    and not cluster.nomad.running(JOB + "-surge")
                    and [e.runner_id for e in cluster.discovery.healthy(APP)] == cluster.running()
                ),
                timeout=60,
                what="the newest revision alone serving",
            )
        assert "nomad_surge_failed" not in [e["event"] for e in logs]
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_a_newer_deploy_lets_a_roll_in_its_second_stage_finish(cluster: Cluster) -> None:
    """A deploy arriving while the app's job already runs the previous new revision and its
    runners still load lets that roll finish: the surge's runners serve until they pass."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Loading), cluster.payload(Loading))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        newest = cluster.payload(LoadingC)
        with capture_logs() as logs, GapWatch(cluster.discovery) as watch:
            await backend.ensure_app(APP, build_spec(LoadingB), cluster.payload(LoadingB))
            await wait_until(
                lambda: "nomad_job_registered" in [e["event"] for e in logs],
                what="the app's job registered with the first new revision",
            )
            await backend.ensure_app(APP, build_spec(LoadingC), newest)
            await wait_until(
                lambda: (
                    revision_of(cluster.nomad) == revision_in(newest)
                    and not cluster.nomad.running(JOB + "-surge")
                    and [e.runner_id for e in cluster.discovery.healthy(APP)] == cluster.running()
                ),
                timeout=90,
                what="the newest revision alone serving",
            )
        assert watch.samples > 10 and watch.gaps == 0
    finally:
        await backend.deregister_all()
        await backend.stop()


async def test_an_undeploy_during_a_roll_leaves_no_job(cluster: Cluster) -> None:
    """An undeploy while a roll registers the app's job with the new revision waits for that
    register and purges after it: the app's job is not registered again behind the purge."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Tiny), cluster.payload(Tiny))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        # Every register is held a while: the app's own is still on its way when undeployed.
        cluster.nomad.delays[("POST", "/v1/jobs")] = 2.0
        await backend.ensure_app(APP, build_spec(Loading), cluster.payload(Loading))
        await wait_until(
            lambda: registrations(cluster.nomad) == 3, what="the app's job registered again"
        )
        await backend.remove_app(APP)
        await wait_until(
            lambda: cluster.nomad.handled.count(("POST", "/v1/jobs")) == 3,
            what="the held register answered",
        )
        assert JOB not in cluster.nomad.jobs
        assert JOB + "-surge" not in cluster.nomad.jobs
        assert backend.runners(APP) == []
    finally:
        cluster.nomad.delays.clear()
        await backend.deregister_all()
        await backend.stop()


async def test_a_roll_no_node_can_take_fails_at_once_and_says_why(cluster: Cluster) -> None:
    """A new revision no node can place (a GPU the cluster lacks) ends its roll at once, logs
    why and keeps it for ``roll_failure``; the old runner serves on."""
    backend = cluster.backend()
    await backend.start()
    try:
        await backend.ensure_app(APP, build_spec(Tiny), cluster.payload(Tiny))
        await backend.set_target(APP, 1)
        await wait_until(lambda: len(cluster.discovery.healthy(APP)) == 1, what="one healthy")
        [runner] = cluster.running()
        with capture_logs() as logs:
            await backend.ensure_app(APP, build_spec(OnH100), cluster.payload(OnH100))
            # Well within the 60 s startup time the surge would otherwise wait.
            await wait_until(
                lambda: "nomad_surge_ended" in [e["event"] for e in logs],
                timeout=30,
                what="the surge to give up",
            )
        [failed] = [e for e in logs if e["event"] == "nomad_surge_failed"]
        assert "missing devices" in failed["reason"]
        assert "nomad_surge_unplaced" in [e["event"] for e in logs]
        why = backend.roll_failure(APP)
        assert why is not None and "was not rolled out" in why and "nvidia/gpu" in why
        assert cluster.running() == [runner]
    finally:
        await backend.deregister_all()
        await backend.stop()
