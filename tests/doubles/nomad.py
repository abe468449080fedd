"""An in-process Nomad agent double that places allocations as real local processes.

Reproduces these facts of NOMAD_CONSUL.md:

- Job bodies are checked by ``validate.problems`` (exact Go field names, integer nanosecond
  durations, string Meta/Env, Operand, deadlines, check intervals >= 1 s, Scaling.Max, Count
  within Scaling, Job.ID, absolute raw_exec command); a problem is a 400. The stored job is
  canonicalized with the server's defaults; ``GET /v1/job/:id`` answers it without the wrapper
  (404 "job not found"). Re-registering resets scaled counts unless ``PreserveCounts``.
- raw_exec only: ``Config.command`` + ``args`` run as a real process in a new session with
  ``Task.Env`` and the NOMAD_* environment (ports, IPs, alloc id/name/index, dirs, limits,
  NOMAD_META_*), ``${...}`` interpolated in args and env; stdout/stderr go to
  ``alloc/logs/<task>.stdout.0``. Another driver fails the task with a "Driver Failure" event.
- GPUs: ``nvidia/gpu`` devices come from ``gpus``, one model per request, honouring the
  ``${device.model}`` and ``${device.attr.memory}`` constraints; NVIDIA_VISIBLE_DEVICES holds
  the UUIDs. A request nothing satisfies places nothing and is retried on every tick (as a
  blocked evaluation is when capacity changes); its evaluations say why (``nomad_evals.py``).
  ``add_gpu`` adds a GPU to the node.
- Group services go into the Consul double before the task starts, with Nomad's IDs
  (``_nomad-task-<alloc>-group-<group>-<service>-<port>``, checks ``_nomad-check-<sha1>``),
  Address = node_ip, Meta ``external-source=nomad``, checks as Go duration strings; they are
  deregistered when the allocation stops.
- check_restart: the check is polled every ``poll`` s, ignored until Grace has passed since the
  allocation was created (group services, nomad#25318), and the task restarted once it has
  been unhealthy for Interval x (Limit-1). The restart's "Restart Signaled" event carries
  ``RestartReason`` ``healthcheck: check "<name>" unhealthy``
  (client/serviceregistration/watcher.go:94-96), and the grace is re-armed from the restart:
  the watcher drops the check when it restarts the task (watcher.go:313-316), the group
  service hook registers the services again before the task restarts
  (client/allocrunner/group_service_hook.go:212-223), and a watch starts its grace anew
  (watcher.go:195-196). Restarts count against RestartPolicy (Attempts within Interval, after
  Delay); past them the allocation fails and ReschedulePolicy places a replacement with the
  same name index after Delay (doubling up to MaxDelay when exponential), unless Attempts is 0
  and not Unlimited, or the allocation belongs to the job's current deployment and that has
  failed (scheduler/reconciler/reconcile_cluster.go:951-957): such an allocation waits, failed
  and counted, until a new job version makes another deployment current.
- Stopping deregisters the group services, waits the group's ShutdownDelay, then sends
  KillSignal (default SIGINT, as Nomad does for raw_exec) to the process group,
  then SIGKILL after KillTimeout, capped at the client's ``max_kill_timeout`` (30 s by default,
  command/agent/config.go:1852; the cap is client/allocrunner/taskrunner/driver_handle.go:29).
- Dynamic ports are picked at random from Nomad's range, 20000-32000, none held by a live
  allocation (``ports.unused_port``): no port-0 bind elsewhere takes one before its task binds.
- Count up places at the lowest free name indexes; count down stops the highest first. Stopping
  one allocation places a replacement with the same index. Scale is 400 outside Scaling
  Min/Max and while a deployment is active ("job scaling blocked due to active deployment").
- Every new job version (register with a changed spec, or scale) of a group with
  Update.MaxParallel > 0 and Count > 0 starts a deployment, as Nomad does: allocations whose
  group changed only in Count/Scaling/Update are updated in place (and must be healthy again);
  other changes, a change of the job's Meta included (Nomad merges it into each task's meta
  before comparing, scheduler/util.go:249-253), replace MaxParallel allocations at a time
  (all at once with MaxParallel 0, reconcile_cluster.go:794-796), stopping the old one as the
  new one is placed (a destructive update, not a canary). An allocation is healthy when its
  task runs and its checks pass (HealthCheck "checks"; "task_states" skips the checks) for
  MinHealthyTime; one that fails or is not healthy within HealthyDeadline is unhealthy. With
  ProgressDeadline 0 the first unhealthy allocation fails the deployment
  (nomad/deploymentwatcher/deployment_watcher.go:706-709); with a ProgressDeadline it does so
  only when the allocation cannot be rescheduled any more (deployment_watcher.go:712-720),
  else the allocation is replaced (deployment_watcher.go:611-617) and the deployment stays
  active until RequireProgressBy: ProgressDeadline after its first placement, pushed on by
  each allocation that turns healthy (nomad/state/state_store.go:6022-6034). Meanwhile every
  scale is refused (nomad/job_endpoint.go:1063-1064). A new registration cancels an active
  deployment.
- Blocking reads: ``index``/``wait`` as Nomad's parseWait reads them (Go duration, "Invalid wait
  time"/"Invalid index" 400), wait capped at 300 s plus up to wait/16 jitter; index 0 never
  blocks; one table-wide index in ``X-Nomad-Index`` on every read.
- ``leaderless``: while a test sets it, every call answers 500 "No cluster leader", as a
  server does during an election (nomad/structs/errors.go:14; an uncoded error is a 500,
  command/agent/http.go:710).
- ``delays``: a test may hold the requests of a (method, path) that many seconds before they
  are handled, as a slow network or a busy leader does; every other request goes on meanwhile.
  A held request is handled even if its caller went away meanwhile (as a request that reached
  Nomad is); ``handled`` lists the requests answered, in order.
- ACL: with ``token`` set every endpoint wants ``X-Nomad-Token`` (403 "Permission denied" when
  missing, "ACL token not found" when wrong).
- Variables (``/v1/var/<path>``, ``/v1/vars``) and the task templates that read them into the
  task's environment: see ``nomad_vars.py``; ``variables`` is the store, for tests to read.

Simpler than Nomad: one node, one task per group (the first), no canaries, auto-revert or
plans; a running allocation that misses its HealthyDeadline is marked unhealthy but not
replaced; the reschedule tracker ignores its Interval; placement is immediate (its
evaluations settle on the next tick); deployments have no promote/fail endpoints; ``Restart
Mode "delay"`` fails like "fail"; log streaming answers only ``plain=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from ._alloc import NS, Allocation, kill_process, now_ns, signal_group, start_process, task_env
from ._durations import go_duration, parse_go_duration
from ._jobspec import canonicalize, destructive, spec_of
from .consul import ConsulDouble
from .nomad_evals import Evaluations, metric
from .nomad_vars import (
    VariableError,
    VariableStore,
    parse_env,
    readable,
    render,
    template_path,
)
from .ports import unused_port
from .validate import problems

__all__ = ["NomadDouble"]

VERSION = "1.10.5"
MAX_WAIT = 300.0
_GPU = "nvidia/gpu"


class _HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass
class _Job:
    spec: dict[str, Any]
    create_index: int
    stopped: bool = False
    version: int = 0
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> AllocMetric


@dataclass
class _Deployment:
    job_id: str
    job_version: int
    groups: dict[str, dict[str, Any]]
    create_index: int
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "running"
    description: str = "Deployment is running"
    started: float = field(default_factory=time.monotonic)
    # RequireProgressBy per group (monotonic), from the first placement on.
    progress_by: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == "running"

    def api(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "JobID": self.job_id,
            "JobVersion": self.job_version,
            "Status": self.status,
            "StatusDescription": self.description,
            "TaskGroups": self.groups,
            "CreateIndex": self.create_index,
        }


def _mib(text: str) -> float:
    found = re.fullmatch(r"\s*([\d.]+)\s*(MiB|GiB|MB|GB|TiB)?\s*", text)
    if not found:
        return float("nan")
    scale = {"MiB": 1, "MB": 1, "GiB": 1024, "GB": 1024, "TiB": 1024 * 1024, None: 1}
    return float(found.group(1)) * scale[found.group(2)]


def _device_fits(gpu: dict[str, Any], constraints: list[dict[str, Any]]) -> bool:
    for c in constraints:
        left, op, right = c.get("LTarget", ""), c.get("Operand", ""), c.get("RTarget", "")
        if left == "${device.model}":
            model = gpu["Model"]
            if op == "regexp":
                ok = re.search(right, model) is not None
            elif op in ("=", "=="):
                ok = model == right
            else:
                ok = op == "!=" and model != right
        elif left == "${device.attr.memory}":
            have, want = float(gpu["MemoryMiB"]), _mib(right)
            ok = {
                ">=": have >= want,
                ">": have > want,
                "<=": have <= want,
                "<": have < want,
                "=": have == want,
            }.get(op, False)
        else:
            ok = False  # an attribute the double does not know never matches
        if not ok:
            return False
    return True


class NomadDouble:
    """A one-node Nomad agent in-process on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        consul: ConsulDouble | None,
        work_dir: Path,
        *,
        token: str | None = None,
        node_ip: str = "127.0.0.1",
        datacenter: str = "dc1",
        region: str = "global",
        gpus: list[dict[str, Any]] | None = None,
        poll: float = 1.0,
        max_kill_timeout: float = 30.0,
    ) -> None:
        self.consul = consul
        self.work_dir = Path(work_dir)
        self.token = token
        self.node_ip = node_ip
        self.datacenter = datacenter
        self.region = region
        self.gpus = list(gpus or [])
        self.poll = poll
        self.max_kill_timeout = max_kill_timeout
        self.leaderless = False  # a test hook: every call is 500 "No cluster leader"
        self.requests: list[tuple[str, str]] = []
        self.delays: dict[tuple[str, str], float] = {}  # a test hook: held requests
        self.handled: list[tuple[str, str]] = []  # requests answered, in order
        self._jobs: dict[str, _Job] = {}
        self._allocs: dict[str, Allocation] = {}
        self._deployments: list[_Deployment] = []
        self.evals = Evaluations()
        self.variables = VariableStore(self._bump)
        self._index = 1
        self._changed = asyncio.Event()
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    # lifecycle

    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        for method in ("POST", "PUT"):
            r.add_route(method, "/v1/jobs", self._register)
            r.add_route(method, "/v1/job/{id}", self._register)
            r.add_route(method, "/v1/job/{id}/scale", self._scale)
            r.add_route(method, "/v1/allocation/{id}/stop", self._alloc_stop)
            r.add_route(method, "/v1/client/allocation/{id}/restart", self._alloc_restart)
            r.add_route(method, "/v1/validate/job", self._validate)
        r.add_get("/v1/jobs", self._list_jobs)
        r.add_get("/v1/job/{id}", self._get_job)
        r.add_delete("/v1/job/{id}", self._deregister)
        r.add_get("/v1/job/{id}/allocations", self._job_allocs)
        r.add_get("/v1/job/{id}/scale", self._scale_status)
        r.add_get("/v1/job/{id}/deployments", self._job_deployments)
        r.add_get("/v1/job/{id}/deployment", self._job_deployment)
        r.add_get("/v1/allocation/{id}", self._get_alloc)
        r.add_get("/v1/job/{id}/evaluations", self._job_evals)
        r.add_get("/v1/evaluation/{id}", self._get_eval)
        r.add_get("/v1/client/fs/logs/{id}", self._logs)
        r.add_route("*", "/v1/var/{path:.*}", self._variable)
        r.add_get("/v1/vars", self._variables)
        r.add_get("/v1/agent/self", self._self)
        r.add_get("/v1/status/leader", self._leader)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stops the server and kills every allocation process it started, waiting for each."""
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for alloc in self._allocs.values():
            if alloc.proc:
                signal_group(alloc.proc, signal.SIGKILL)
                await alloc.proc.wait()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self._session:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> NomadDouble:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # test hooks

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Registered jobs (canonical), by ID."""
        return {job_id: job.spec for job_id, job in self._jobs.items()}

    def _ports_held(self) -> set[int]:
        """The ports of the allocations not yet terminal (Nomad's ``NetworkIndex.AddAllocs``
        counts every allocation that is not client-terminal)."""
        return {p for a in self._allocs.values() if not a.terminal for p in a.ports.values()}

    def allocations(self, job_id: str) -> list[Allocation]:
        """Every allocation of a job, oldest first."""
        return [a for a in self._allocs.values() if a.job_id == job_id]

    def running(self, job_id: str) -> list[Allocation]:
        """The job's allocations that are live and whose task runs, by name index."""
        found = [a for a in self.allocations(job_id) if a.live and a.client_status == "running"]
        return sorted(found, key=lambda a: a.index)

    def deployments(self, job_id: str) -> list[dict[str, Any]]:
        return [d.api() for d in self._deployments if d.job_id == job_id]

    def kill_task(self, alloc_id: str, sig: int = signal.SIGKILL) -> None:
        """Signal the task's process group as a crash would; restart policy applies."""
        proc = self._allocs[alloc_id].proc
        if proc is not None and proc.returncode is None:
            signal_group(proc, sig)

    # state

    def _bump(self) -> int:
        self._index += 1
        self._changed.set()
        self._changed = asyncio.Event()
        self._kick.set()
        return self._index

    def _touch(self, alloc: Allocation) -> None:
        alloc.modify_index = self._bump()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _active_deployment(self, job_id: str) -> _Deployment | None:
        return next(
            (d for d in reversed(self._deployments) if d.job_id == job_id and d.active), None
        )

    def _new_version(self, job: _Job, spec: dict[str, Any]) -> None:
        """Store a changed job as a new version; start a deployment where Nomad would."""
        old = self._active_deployment(spec["ID"])
        if old:
            old.status, old.description = "cancelled", "Cancelled due to newer version of job"
        job.version += 1
        job.spec = spec
        job.stopped = False
        groups = {
            g["Name"]: {
                "DesiredTotal": g["Count"],
                "PlacedAllocs": 0,
                "HealthyAllocs": 0,
                "UnhealthyAllocs": 0,
            }
            for g in spec["TaskGroups"]
            if (g.get("Update") or {}).get("MaxParallel", 0) > 0 and g["Count"] > 0
        }
        if groups:
            self._deployments.append(
                _Deployment(spec["ID"], job.version, groups, create_index=self._index + 1)
            )
        self._bump()

    def add_gpu(self, gpu: dict[str, Any]) -> None:
        """A GPU joins the node (as a node with it would join): blocked placements run again."""
        self.gpus.append(gpu)
        self._kick.set()

    def _pick_gpus(
        self, task: dict[str, Any], used: set[str] | None = None
    ) -> tuple[list[str], str] | None:
        """The GPUs to give ``task``, or None; ``used`` (default: those allocations hold)."""
        wanted = [d for d in task["Resources"].get("Devices") or [] if d["Name"].startswith(_GPU)]
        if not wanted:
            return [], ""
        if used is None:
            used = {u for a in self._allocs.values() if not a.terminal for u in a.gpus}
        picked: list[str] = []
        model = ""
        for request in wanted:
            count = request.get("Count", 1) or 1
            constraints = list(request.get("Constraints") or [])
            if request["Name"] != _GPU:  # nvidia/gpu/<model>
                model_name = request["Name"][len(_GPU) + 1 :]
                constraints.append(
                    {"LTarget": "${device.model}", "Operand": "=", "RTarget": model_name}
                )
            free = [
                g
                for g in self.gpus
                if g["UUID"] not in used
                and g["UUID"] not in picked
                and _device_fits(g, constraints)
            ]
            by_model: dict[str, list[str]] = {}
            for g in free:
                by_model.setdefault(g["Model"], []).append(g["UUID"])
            fit = next(((m, ids) for m, ids in by_model.items() if len(ids) >= count), None)
            if fit is None:
                return None
            model = fit[0]
            picked.extend(fit[1][:count])
        return picked, model

    def _place(
        self, job: _Job, group: dict[str, Any], index: int, previous: Allocation | None = None
    ) -> Allocation | None:
        """Create an allocation and start it, or None when its devices are not free."""
        gpus = self._pick_gpus(group["Tasks"][0])
        if gpus is None:
            return None
        alloc = Allocation(
            job_id=job.spec["ID"],
            group=group["Name"],
            index=index,
            job_version=job.version,
            job=job.spec,
            create_index=self._index + 1,
            work_dir=self.work_dir,
            gpus=gpus[0],
            gpus_model=gpus[1],
        )
        if previous:
            alloc.previous = previous.id
            alloc.reschedules = previous.reschedules + 1
            previous.next = alloc.id
        for network in group.get("Networks") or []:
            for port in network.get("DynamicPorts") or []:
                alloc.ports[port["Label"]] = unused_port(self._ports_held())
            for port in network.get("ReservedPorts") or []:
                alloc.ports[port["Label"]] = port["Value"]
        task = alloc.task
        alloc.task_states[task["Name"]] = {
            "State": "pending",
            "Failed": False,
            "Restarts": 0,
            "LastRestart": None,
            "StartedAt": None,
            "FinishedAt": None,
            "Events": [],
        }
        alloc.event("Received", "Task received by client")
        deployment = self._active_deployment(job.spec["ID"])
        if deployment and deployment.job_version == job.version:
            alloc.deployment_id = deployment.id
            if group["Name"] in deployment.groups:
                deployment.groups[group["Name"]]["PlacedAllocs"] += 1
                self._start_progress(deployment, group)
        self._allocs[alloc.id] = alloc
        self._touch(alloc)
        alloc.supervisor = self._spawn(self._supervise(alloc))
        return alloc

    # reconciliation

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the kick is set, and stop() then waits on this loop for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.poll, 0.25)):
                    await self._kick.wait()
            self._kick.clear()
            for job in list(self._jobs.values()):
                self._reconcile(job)
                # The scheduler ran: pending evaluations settle with what failed to place.
                if self.evals.settle(job.spec["ID"], job.failed, self._index + 1):
                    self._bump()

    def _reconcile(self, job: _Job) -> None:
        deployment = self._active_deployment(job.spec["ID"])
        if deployment:
            self._track_health(job, deployment)
        for group in job.spec["TaskGroups"]:
            self._reconcile_group(job, group, deployment)

    def _reconcile_group(
        self, job: _Job, group: dict[str, Any], deployment: _Deployment | None
    ) -> None:
        desired = 0 if job.stopped else group["Count"]
        live = [
            a
            for a in self._allocs.values()
            if a.job_id == job.spec["ID"] and a.group == group["Name"] and a.live
        ]
        for alloc in live:
            if alloc.terminal:
                continue  # awaits a reschedule, no update (reconcile_cluster.go:417)
            if alloc.job_version != job.version and not destructive(
                alloc.job, job.spec, alloc.group_spec, group
            ):
                alloc.job, alloc.job_version = job.spec, job.version  # an in-place update
                if deployment and deployment.job_version == job.version:
                    alloc.deployment_id, alloc.healthy, alloc.healthy_since = (
                        deployment.id,
                        None,
                        None,
                    )
                    if group["Name"] in deployment.groups:
                        self._start_progress(deployment, group)
                self._touch(alloc)
        for alloc in live:
            # A failed allocation held back by a failed deployment is rescheduled once that
            # deployment is no longer the job's current one (reconcile_cluster.go:951-957).
            if alloc.held and not self._held_by_failed_deployment(job, alloc):
                alloc.held = False
                self._spawn(self._reschedule(alloc, 0.0))
        # Count down: the highest name indexes first (reconcile_cluster.go computeStop).
        for alloc in sorted(live, key=lambda a: -a.index)[: max(0, len(live) - desired)]:
            self._stop_alloc(alloc, "alloc not needed due to job update")
            live.remove(alloc)
        taken = {a.index for a in live}
        job.failed.pop(group["Name"], None)
        for placed in range(desired - len(live)):
            index = next(i for i in range(desired + len(taken) + 1) if i not in taken)
            if self._place(job, group, index) is None:
                # Blocked: filtered when the node lacks the devices, exhausted when they are
                # only in use.
                filtered = self._pick_gpus(group["Tasks"][0], used=set()) is None
                failed = desired - len(live) - placed
                job.failed[group["Name"]] = metric(
                    self.datacenter, filtered=filtered, failed=failed
                )
                break
            taken.add(index)
        old = sorted(
            (a for a in live if a.job_version != job.version and not a.terminal),
            key=lambda a: a.index,
        )
        if not old:
            return
        latest = next(
            (
                d
                for d in reversed(self._deployments)
                if d.job_id == job.spec["ID"] and d.job_version == job.version
            ),
            None,
        )
        if latest is not None and latest.status in ("failed", "cancelled"):
            return  # a failed rolling update stops replacing (no auto-revert here)
        parallel = (group.get("Update") or {}).get("MaxParallel", 0)
        in_flight = [
            a
            for a in live
            if a.job_version == job.version and a.healthy is not True and a.deployment_id
        ]
        budget = len(old) if not parallel else max(0, parallel - len(in_flight))
        for alloc in old[:budget]:
            # A destructive update: the old allocation stops as its replacement is placed.
            self._stop_alloc(alloc, "alloc is being updated due to job update")
            self._place(job, group, alloc.index)

    def _checks_pass(self, alloc: Allocation) -> bool:
        if self.consul is None:
            return True
        return all(self.consul.check_status(c) == "passing" for c in alloc.check_ids)

    @staticmethod
    def _start_progress(deployment: _Deployment, group: dict[str, Any]) -> None:
        """RequireProgressBy starts at the group's first placement (state_store.go:6024-6028)."""
        progress = (group.get("Update") or {}).get("ProgressDeadline", 0)
        if progress and group["Name"] not in deployment.progress_by:
            deployment.progress_by[group["Name"]] = time.monotonic() + progress / NS

    @staticmethod
    def _reschedule_eligible(alloc: Allocation) -> bool:
        """Whether a failed allocation may still be rescheduled (structs/alloc.go:458)."""
        policy = alloc.group_spec["ReschedulePolicy"]
        return bool(policy["Unlimited"]) or alloc.reschedules < policy["Attempts"]

    def _fail_deployment(self, deployment: _Deployment, description: str) -> None:
        deployment.status, deployment.description = "failed", description
        self._bump()

    def _track_health(self, job: _Job, deployment: _Deployment) -> None:
        """Allocation health and the deployment's fate, as the deployment watcher decides it.

        Unhealthy allocations fail a deployment at once only without a ProgressDeadline or when
        they cannot be rescheduled (deployment_watcher.go:700-720); otherwise it fails when
        RequireProgressBy passes with the group short of healthy allocations.
        """
        now = time.monotonic()
        done = True
        for name, state in deployment.groups.items():
            group = next((g for g in job.spec["TaskGroups"] if g["Name"] == name), None)
            if group is None:
                continue
            update = group.get("Update") or {}
            mine = [
                a
                for a in self._allocs.values()
                if a.deployment_id == deployment.id and a.group == name
            ]
            for alloc in mine:
                if alloc.healthy is not None or not alloc.live:
                    continue
                ok = alloc.client_status == "running"
                if update.get("HealthCheck") != "task_states":
                    ok = ok and self._checks_pass(alloc)
                alloc.healthy_since = (alloc.healthy_since or now) if ok else None
                if ok and now - (alloc.healthy_since or now) >= update["MinHealthyTime"] / NS:
                    alloc.healthy = True
                    progress = update.get("ProgressDeadline", 0)
                    if progress:  # state_store.go:6029-6032
                        by = deployment.progress_by.get(name, 0.0)
                        deployment.progress_by[name] = max(by, now + progress / NS)
                    self._touch(alloc)
                elif alloc.client_status == "failed" or (
                    now - alloc.created > update["HealthyDeadline"] / NS
                ):
                    alloc.healthy = False
                    self._touch(alloc)
            state["HealthyAllocs"] = sum(a.healthy is True for a in mine)
            state["UnhealthyAllocs"] = sum(a.healthy is False for a in mine)
            unhealthy = [a for a in mine if a.healthy is False and a.live]
            progress = update.get("ProgressDeadline", 0)
            if unhealthy and (
                not progress or not all(self._reschedule_eligible(a) for a in unhealthy)
            ):
                self._fail_deployment(deployment, "Failed due to unhealthy allocations")
                return
            by = deployment.progress_by.get(name)
            healthy_live = sum(a.healthy is True and a.live for a in mine)
            if by is not None and now > by and healthy_live < group["Count"]:
                self._fail_deployment(deployment, "Failed due to progress deadline")
                return
            done = done and healthy_live >= group["Count"]
        if done:
            deployment.status = "successful"
            deployment.description = "Deployment completed successfully"
            self._bump()

    def _held_by_failed_deployment(self, job: _Job, alloc: Allocation) -> bool:
        """Whether the job's current deployment failed and ``alloc`` was part of it."""
        current = next(
            (
                d
                for d in reversed(self._deployments)
                if d.job_id == job.spec["ID"] and d.job_version == job.version
            ),
            None,
        )
        return (
            current is not None and current.status == "failed" and alloc.deployment_id == current.id
        )

    def _kill_timeout(self, task: dict[str, Any]) -> float:
        """KillTimeout capped at the client's max_kill_timeout (driver_handle.go:29)."""
        return float(min(task["KillTimeout"] / NS, self.max_kill_timeout))

    # allocation lifecycle

    def _stop_alloc(self, alloc: Allocation, why: str) -> None:
        if alloc.desired_status != "run":
            return
        alloc.desired_status, alloc.desired_description = "stop", why
        self._touch(alloc)
        self._spawn(self._finish(alloc))

    async def _finish(self, alloc: Allocation) -> None:
        task = alloc.task
        proc = alloc.proc
        # PreKill: group services leave Consul first, then ShutdownDelay passes before the
        # task is signalled (client/allocrunner/group_service_hook.go:233-259).
        await self._deregister_services(alloc)
        delay = (alloc.group_spec.get("ShutdownDelay") or 0) / NS
        if delay and proc is not None and proc.returncode is None:
            await asyncio.sleep(delay)
        if proc is not None and proc.returncode is None:
            alloc.event("Killing", "Sent interrupt")
            await kill_process(proc, task.get("KillSignal", ""), self._kill_timeout(task))
        if alloc.supervisor and not alloc.supervisor.done():
            alloc.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await alloc.supervisor
        await self._deregister_services(alloc)
        state = alloc.task_states[task["Name"]]
        if state["State"] != "dead":
            state["State"], state["FinishedAt"] = "dead", now_ns()
            alloc.event("Killed", "Task successfully killed")
        if alloc.client_status != "failed":
            alloc.client_status = "complete"
        self._touch(alloc)

    async def _supervise(self, alloc: Allocation) -> None:
        task = alloc.task
        state = alloc.task_states[task["Name"]]
        if task.get("Driver") != "raw_exec":
            message = f"the Nomad double runs raw_exec only, not {task.get('Driver')!r}"
            alloc.event("Driver Failure", message, DriverError=message)
            await self._fail(alloc)
            return
        await self._register_services(alloc)
        watcher = self._spawn(self._watch_checks(alloc))
        restarts: list[float] = []
        policy = alloc.group_spec["RestartPolicy"]
        try:
            while True:
                env = task_env(alloc, self.node_ip, self.region, self.datacenter)
                rendered = await self._render_templates(alloc)
                if rendered is None:
                    return
                env.update(rendered)  # template env overrides Env (client/taskenv/env.go:675)
                try:
                    alloc.proc = start_process(alloc, env)
                except OSError as exc:
                    alloc.event("Driver Failure", str(exc), DriverError=str(exc))
                    await self._fail(alloc)
                    return
                state.update(State="running", StartedAt=state["StartedAt"] or now_ns())
                alloc.client_status = "running"
                alloc.event("Started", "Task started by client")
                self._touch(alloc)
                code = await alloc.proc.wait()
                if alloc.desired_status != "run":
                    return
                alloc.event("Terminated", f"Exit Code: {code}", ExitCode=code)
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < policy["Interval"] / NS]
                if len(restarts) >= policy["Attempts"]:
                    alloc.event("Not Restarting", "Exceeded allowed attempts")
                    await self._fail(alloc)
                    return
                restarts.append(now)
                state.update(State="pending", Restarts=state["Restarts"] + 1, LastRestart=now_ns())
                alloc.event("Restarting", "Task restarting in the restart delay")
                self._touch(alloc)
                await asyncio.sleep(policy["Delay"] / NS)
        finally:
            watcher.cancel()

    async def _render_templates(self, alloc: Allocation) -> dict[str, str] | None:
        """Render the task's templates (``nomad_vars``), waiting while a Variable is missing;
        the env templates' variables, or None when the task failed or was stopped meanwhile."""
        task, job = alloc.task, alloc.job
        namespace = job.get("Namespace", "default")
        out: dict[str, str] = {}
        for template in task.get("Templates") or []:
            try:
                path = template_path(template)
                if not readable(path, alloc.job_id, alloc.group, task["Name"]):
                    raise ValueError(f"{path}: Permission denied")
            except ValueError as exc:
                alloc.event("Killing", f"Template failed: {exc}", FailsTask=True)
                await self._fail(alloc)
                return None
            told = False
            while (found := self.variables.get(namespace, path)) is None:
                if alloc.desired_status != "run":
                    return None
                if not told:
                    told = True
                    alloc.event(
                        "Template", f"Missing: nomad.var.block({path}@{namespace}.{self.region})"
                    )
                    self._touch(alloc)
                await asyncio.sleep(0.05)
            text = render(found.items)
            dest = alloc.dir / task["Name"] / template["DestPath"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            dest.chmod(int(template.get("Perms") or "0644", 8))
            if template.get("Envvars"):
                out.update(parse_env(text))
        return out

    async def _fail(self, alloc: Allocation) -> None:
        state = alloc.task_states[alloc.task["Name"]]
        state.update(State="dead", Failed=True, FinishedAt=now_ns())
        alloc.client_status = "failed"
        self._touch(alloc)
        await self._deregister_services(alloc)
        policy = alloc.group_spec["ReschedulePolicy"]
        if not policy["Unlimited"] and alloc.reschedules >= policy["Attempts"]:
            return
        delay = policy["Delay"] / NS
        if policy["DelayFunction"] == "exponential":
            delay = min(delay * 2**alloc.reschedules, policy["MaxDelay"] / NS or delay)
        self._spawn(self._reschedule(alloc, delay))

    async def _reschedule(self, alloc: Allocation, delay: float) -> None:
        await asyncio.sleep(delay)
        job = self._jobs.get(alloc.job_id)
        if job is None or job.stopped or not alloc.live:
            return
        if self._held_by_failed_deployment(job, alloc):
            alloc.held = True  # placed once a new job version makes another deployment current
            return
        group = next((g for g in job.spec["TaskGroups"] if g["Name"] == alloc.group), None)
        if group is not None:
            self._place(job, group, alloc.index, previous=alloc)

    async def _watch_checks(self, alloc: Allocation) -> None:
        """check_restart, polled every ``poll`` seconds as the Nomad client does every 1 s."""
        watched = []
        for service in alloc.group_spec.get("Services") or []:
            for check in service.get("Checks") or []:
                rule = check.get("CheckRestart") or service.get("CheckRestart")
                if rule and rule.get("Limit"):
                    watched.append((self._check_id(alloc, service, check), check, rule))
        if not watched or self.consul is None:
            return
        bad_since: dict[str, float] = {}
        armed = alloc.created  # group services: from the allocation's creation (nomad#25318)
        while True:
            await asyncio.sleep(self.poll)
            now = time.monotonic()
            for check_id, check, rule in watched:
                grace = (rule.get("Grace") or 0) / NS
                status = self.consul.check_status(check_id)
                bad = status == "critical" or (
                    status == "warning" and not rule.get("IgnoreWarnings")
                )
                if now - armed < grace or not bad:
                    bad_since.pop(check_id, None)
                    continue
                since = bad_since.setdefault(check_id, now)
                if now - since >= check["Interval"] / NS * (rule["Limit"] - 1):
                    bad_since.clear()
                    # The message is watcher.go:94's, with Go's %q quoting.
                    reason = f"healthcheck: check {json.dumps(check.get('Name', ''))} unhealthy"
                    await self._restart(alloc, reason)
                    armed = time.monotonic()  # watched anew, grace and all (see docstring)
                    break

    async def _restart(self, alloc: Allocation, why: str) -> None:
        proc = alloc.proc
        if proc is None or proc.returncode is not None:
            return
        alloc.event("Restart Signaled", why, RestartReason=why)
        task = alloc.task
        await kill_process(proc, task.get("KillSignal", ""), self._kill_timeout(task))

    # Consul

    @staticmethod
    def _check_id(alloc: Allocation, service: dict[str, Any], check: dict[str, Any]) -> str:
        digest = hashlib.sha1(
            f"{alloc.id}/{service['Name']}/{check.get('Name', '')}/{check.get('Path', '')}".encode()
        ).hexdigest()
        return f"_nomad-check-{digest}"

    async def _consul_put(self, path: str, body: Any = None) -> None:
        assert self.consul is not None and self._session is not None
        headers = {"X-Consul-Token": self.consul.token} if self.consul.token else {}
        async with self._session.put(self.consul.url + path, json=body, headers=headers) as resp:
            if resp.status >= 400 and resp.status != 404:
                raise RuntimeError(f"Consul refused {path}: {resp.status} {await resp.text()}")

    async def _register_services(self, alloc: Allocation) -> None:
        if self.consul is None:
            return
        for service in alloc.group_spec.get("Services") or []:
            if service.get("Provider", "consul") != "consul":
                continue
            label = service.get("PortLabel", "")
            port = alloc.ports.get(label, 0)
            service_id = f"_nomad-task-{alloc.id}-group-{alloc.group}-{service['Name']}-{label}"
            checks = []
            for check in service.get("Checks") or []:
                check_id = self._check_id(alloc, service, check)
                entry: dict[str, Any] = {
                    "CheckID": check_id,
                    "Name": check.get("Name") or f"service: {service['Name']!r} check",
                    "Interval": go_duration(check["Interval"] / NS),
                    "Timeout": go_duration(check["Timeout"] / NS),
                }
                check_port = alloc.ports.get(check.get("PortLabel") or label, port)
                if check.get("Type") == "http":
                    protocol = check.get("Protocol") or "http"
                    entry["HTTP"] = (
                        f"{protocol}://{self.node_ip}:{check_port}{check.get('Path', '')}"
                    )
                    entry["Method"] = check.get("Method") or "GET"
                    if check.get("Header"):
                        entry["Header"] = check["Header"]
                elif check.get("Type") == "tcp":
                    entry["TCP"] = f"{self.node_ip}:{check_port}"
                else:
                    continue
                if check.get("InitialStatus"):
                    entry["Status"] = check["InitialStatus"]
                checks.append(entry)
                alloc.check_ids.append(check_id)
            await self._consul_put(
                "/v1/agent/service/register",
                {
                    "ID": service_id,
                    "Name": service["Name"],
                    "Tags": service.get("Tags") or [],
                    "Address": self.node_ip,
                    "Port": port,
                    "Meta": {**(service.get("Meta") or {}), "external-source": "nomad"},
                    "Checks": checks,
                },
            )
            alloc.service_ids.append(service_id)

    async def _deregister_services(self, alloc: Allocation) -> None:
        if self.consul is None:
            return
        while alloc.service_ids:
            service_id = alloc.service_ids.pop()
            with contextlib.suppress(aiohttp.ClientError, RuntimeError):
                await self._consul_put(f"/v1/agent/service/deregister/{service_id}")

    # HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if held := self.delays.get((request.method, request.path)):
            await asyncio.sleep(held)
        if self.leaderless:
            return web.Response(status=500, text="No cluster leader")
        if self.token is not None:
            given = request.headers.get("X-Nomad-Token")
            if given is None:
                return web.Response(status=403, text="Permission denied")
            if given != self.token:
                return web.Response(status=403, text="ACL token not found")
        try:
            response: web.StreamResponse = await handler(request)
        except _HTTPError as exc:
            return web.Response(status=exc.status, text=exc.text)
        finally:
            self.handled.append((request.method, request.path))
        return response

    async def _block(self, request: web.Request) -> None:
        """Wait as a blocking query does: until the index passes ``index`` or ``wait`` ends."""
        wait = MAX_WAIT
        if raw := request.query.get("wait"):
            try:
                wait = parse_go_duration(raw)
            except ValueError:
                raise _HTTPError(400, "Invalid wait time") from None
        raw_index = request.query.get("index", "0")
        if not raw_index.isdigit():
            raise _HTTPError(400, "Invalid index")
        min_index = int(raw_index)
        if min_index == 0:
            return
        wait = min(wait, MAX_WAIT) if wait > 0 else MAX_WAIT
        deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
        while self._index <= min_index:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def _reply(self, body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers={"X-Nomad-Index": str(self._index)})

    def _job(self, request: web.Request) -> _Job:
        job = self._jobs.get(request.match_info["id"])
        if job is None:
            raise _HTTPError(404, "job not found")
        return job

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise _HTTPError(400, f"Request decode failed: {exc}") from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "Request decode failed: expected an object")
        return body

    async def _register(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        found = problems(body)
        if "Job" not in body:
            raise _HTTPError(400, "Job must be specified")
        if found:
            raise _HTTPError(400, "; ".join(found))
        raw = body["Job"]
        path_id = request.match_info.get("id")
        if path_id is not None and raw["ID"] != path_id:
            raise _HTTPError(400, "Job ID does not match name")
        spec = canonicalize(raw)
        job = self._jobs.get(spec["ID"])
        if job is not None and body.get("PreserveCounts"):
            counts = {g["Name"]: g["Count"] for g in job.spec["TaskGroups"]}
            for group in spec["TaskGroups"]:
                group["Count"] = counts.get(group["Name"], group["Count"])
        if job is None:
            job = _Job(spec=spec, create_index=self._index + 1, version=-1)
            self._jobs[spec["ID"]] = job
            self._new_version(job, spec)
        elif job.stopped or spec_of(spec) != spec_of(job.spec):
            self._new_version(job, spec)
        self._reconcile(job)
        index = self._bump()
        eval_id = self.evals.create(spec["ID"], "job-register", index)
        return self._reply(
            {
                "EvalID": eval_id,
                "EvalCreateIndex": index,
                "JobModifyIndex": index,
                "Warnings": "",
                "Index": index,
            }
        )

    async def _validate(self, request: web.Request) -> web.Response:
        found = problems(await self._body(request))
        return self._reply(
            {
                "DriverConfigValidated": True,
                "ValidationErrors": found,
                "Error": "; ".join(found),
                "Warnings": "",
            }
        )

    def _job_api(self, job: _Job) -> dict[str, Any]:
        allocs = [a for a in self._allocs.values() if a.job_id == job.spec["ID"]]
        if job.stopped:
            status = "dead" if all(a.terminal for a in allocs) else "running"
        else:
            status = "running" if any(a.client_status == "running" for a in allocs) else "pending"
        return {
            **job.spec,
            "Version": job.version,
            "Status": status,
            "Stop": job.stopped,
            "CreateIndex": job.create_index,
            "ModifyIndex": self._index,
            "JobModifyIndex": self._index,
            "SubmitTime": now_ns(),
        }

    async def _list_jobs(self, request: web.Request) -> web.Response:
        await self._block(request)
        keys = ("ID", "Name", "Namespace", "Type", "Priority", "Status", "Stop", "Datacenters")
        stubs = [{k: self._job_api(j)[k] for k in keys} for j in self._jobs.values()]
        return self._reply(stubs)

    async def _get_job(self, request: web.Request) -> web.Response:
        self._job(request)
        await self._block(request)
        return self._reply(self._job_api(self._job(request)))

    async def _deregister(self, request: web.Request) -> web.Response:
        job = self._job(request)
        job.stopped = True
        for alloc in self.allocations(job.spec["ID"]):
            self._stop_alloc(alloc, "alloc not needed since job is stopped")
        if request.query.get("purge") in ("true", "1"):
            del self._jobs[job.spec["ID"]]
        index = self._bump()
        eval_id = self.evals.create(job.spec["ID"], "job-deregister", index)
        return self._reply({"EvalID": eval_id, "EvalCreateIndex": index, "Index": index})

    async def _job_allocs(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        await self._block(request)
        return self._reply([a.stub() for a in self.allocations(job_id)])

    async def _scale(self, request: web.Request) -> web.Response:
        job = self._job(request)
        body = await self._body(request)
        target = body.get("Target") or {}
        group = next((g for g in job.spec["TaskGroups"] if g["Name"] == target.get("Group")), None)
        if group is None:
            raise _HTTPError(400, "job scaling target group not found or invalid group")
        count = body.get("Count")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise _HTTPError(400, f"Count must be a non-negative integer, got {count!r}")
            if self._active_deployment(job.spec["ID"]):
                raise _HTTPError(400, "job scaling blocked due to active deployment")
            scaling = group.get("Scaling") or {}
            low, high = scaling.get("Min"), scaling.get("Max")
            if high is not None and count > high:
                raise _HTTPError(
                    400, f"group count was greater than scaling policy maximum: {count} > {high}"
                )
            if low is not None and count < low:
                raise _HTTPError(
                    400, f"group count was less than scaling policy minimum: {count} < {low}"
                )
            if count != group["Count"]:
                spec = canonicalize(job.spec)
                next(g for g in spec["TaskGroups"] if g["Name"] == group["Name"])["Count"] = count
                self._new_version(job, spec)
                self._reconcile(job)
        index = self._bump()
        # A scale with a Count is evaluated even when the Count is unchanged; without, not.
        eval_id = ""
        if count is not None:
            eval_id = self.evals.create(job.spec["ID"], "job-scaling", index)
        return self._reply({"EvalID": eval_id, "EvalCreateIndex": index, "Index": index})

    async def _scale_status(self, request: web.Request) -> web.Response:
        job = self._job(request)
        await self._block(request)
        groups = {}
        for group in job.spec["TaskGroups"]:
            mine = [a for a in self.allocations(job.spec["ID"]) if a.group == group["Name"]]
            groups[group["Name"]] = {
                "Desired": group["Count"],
                "Placed": sum(a.live for a in mine),
                "Running": sum(a.live and a.client_status == "running" for a in mine),
                "Healthy": sum(a.live and a.healthy is True for a in mine),
                "Unhealthy": sum(a.live and a.healthy is False for a in mine),
                "Events": [],
            }
        return self._reply(
            {
                "JobID": job.spec["ID"],
                "Namespace": job.spec["Namespace"],
                "JobCreateIndex": job.create_index,
                "JobModifyIndex": self._index,
                "JobStopped": job.stopped,
                "TaskGroups": groups,
            }
        )

    async def _job_deployments(self, request: web.Request) -> web.Response:
        await self._block(request)
        return self._reply(list(reversed(self.deployments(request.match_info["id"]))))

    async def _job_deployment(self, request: web.Request) -> web.Response:
        await self._block(request)
        found = self.deployments(request.match_info["id"])
        return self._reply(found[-1] if found else None)

    def _alloc(self, request: web.Request) -> Allocation:
        alloc_id = request.match_info["id"]
        alloc = self._allocs.get(alloc_id) or next(
            (a for a in self._allocs.values() if len(alloc_id) >= 8 and a.id.startswith(alloc_id)),
            None,
        )
        if alloc is None:
            raise _HTTPError(404, "alloc not found")
        return alloc

    async def _get_alloc(self, request: web.Request) -> web.Response:
        self._alloc(request)
        await self._block(request)
        return self._reply(self._alloc(request).full(self.node_ip))

    async def _alloc_stop(self, request: web.Request) -> web.Response:
        alloc = self._alloc(request)
        self._stop_alloc(alloc, "alloc was stopped")
        # Nomad places a replacement with the count unchanged; reconcile does it.
        self._kick.set()
        index = self._bump()
        eval_id = self.evals.create(alloc.job_id, "alloc-stop", index)
        return self._reply({"EvalID": eval_id, "Index": index})

    async def _job_evals(self, request: web.Request) -> web.Response:
        await self._block(request)
        return self._reply(self.evals.of_job(request.match_info["id"]))

    async def _get_eval(self, request: web.Request) -> web.Response:
        eval_id = request.match_info["id"]
        if eval_id not in self.evals.by_id:
            raise _HTTPError(404, "eval not found")
        await self._block(request)
        return self._reply(dict(self.evals.by_id[eval_id]))

    async def _alloc_restart(self, request: web.Request) -> web.Response:
        alloc = self._alloc(request)
        self._spawn(self._restart(alloc, "User requested restart"))
        return self._reply({})

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        alloc = self._alloc(request)
        task = request.query.get("task") or alloc.task["Name"]
        kind = request.query.get("type", "stdout")
        if kind not in ("stdout", "stderr"):
            raise _HTTPError(400, f"invalid log type: {kind!r}")
        if request.query.get("plain") not in ("true", "1"):
            raise _HTTPError(400, "the Nomad double serves logs with plain=true only")
        path = alloc.dir / "alloc" / "logs" / f"{task}.{kind}.0"
        data = path.read_bytes() if path.exists() else b""
        offset = int(request.query.get("offset", "0") or 0)
        if request.query.get("origin") == "end":
            data = data[max(0, len(data) - offset) :]
        else:
            data = data[offset:]
        return web.Response(body=data, content_type="text/plain")

    async def _variable(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        namespace = request.query.get("namespace", "default")
        if not path:
            raise _HTTPError(400, "missing variable path")
        try:
            if request.method == "GET":
                found = self.variables.get(namespace, path)
                if found is None:
                    raise _HTTPError(404, "variable not found")
                return self._reply(found.full())
            if request.method in ("PUT", "POST"):
                try:
                    body = await request.json()
                except ValueError as exc:
                    raise _HTTPError(400, f"Request decode failed: {exc}") from None
                return self._reply(self.variables.put(namespace, path, body).full())
            if request.method == "DELETE":
                self.variables.delete(namespace, path)
                return web.Response(status=204, headers={"X-Nomad-Index": str(self._index)})
        except VariableError as exc:
            raise _HTTPError(exc.status, exc.text) from None
        raise _HTTPError(400, "Invalid method")

    async def _variables(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace", "default")
        return self._reply(self.variables.list(namespace, request.query.get("prefix", "")))

    async def _self(self, request: web.Request) -> web.Response:
        return self._reply(
            {
                "config": {"Version": {"Version": VERSION}, "Region": self.region},
                "member": {"Name": "node-1.global", "Addr": self.node_ip},
            }
        )

    async def _leader(self, request: web.Request) -> web.Response:
        return self._reply(f"{self.node_ip}:4647")
