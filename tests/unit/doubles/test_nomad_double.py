"""The Nomad double places real processes and behaves as NOMAD_CONSUL.md says Nomad does."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from doubles import ConsulDouble, NomadDouble
from doubles.ports import ephemeral_range
from support import DEADLINE, wait_until

S = 1_000_000_000

SERVE = """
import http.server, json, os, sys
port = int(os.environ["NOMAD_PORT_http"])
print(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}), flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(os.environ.get("SICK_FILE", "/nonexistent"))
        self.send_response(500 if sick or self.path != "/_yurt/health" else 200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["NOMAD_IP_http"], port), H).serve_forever()
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "serve.py"
    path.write_text(SERVE)
    return path


@pytest.fixture
async def consul() -> AsyncIterator[ConsulDouble]:
    async with ConsulDouble() as double:
        yield double


@pytest.fixture
async def nomad(consul: ConsulDouble, tmp_path: Path) -> AsyncIterator[NomadDouble]:
    async with NomadDouble(consul, tmp_path / "nomad", poll=0.2) as double:
        yield double


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
        yield s


def make_job(
    script: Path,
    *,
    count: int = 1,
    max_parallel: int = 0,
    env: dict[str, str] | None = None,
    check_restart: dict[str, Any] | None = None,
    driver: str = "raw_exec",
    devices: list[dict[str, Any]] | None = None,
    reschedule_attempts: int = 0,
    update: dict[str, Any] | None = None,
    reschedule: dict[str, Any] | None = None,
    kill_timeout: int = 2 * S,
) -> dict[str, Any]:
    """A one-group job running ``script``; MaxParallel 0 means no deployments."""
    check: dict[str, Any] = {
        "Name": "health",
        "Type": "http",
        "Path": "/_yurt/health",
        "Interval": S,
        "Timeout": S,
    }
    if check_restart:
        check["CheckRestart"] = check_restart
    return {
        "ID": "app",
        "Update": {"MaxParallel": max_parallel, "MinHealthyTime": S, **(update or {})},
        "TaskGroups": [
            {
                "Name": "runner",
                "Count": count,
                "Scaling": {"Min": 0, "Max": 5},
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "RestartPolicy": {"Attempts": 3, "Interval": 60 * S, "Delay": 0, "Mode": "fail"},
                "ReschedulePolicy": reschedule
                or {"Attempts": reschedule_attempts, "Unlimited": False},
                "Services": [
                    {"Name": "app", "PortLabel": "http", "Tags": ["t"], "Checks": [check]}
                ],
                "Tasks": [
                    {
                        "Name": "runner",
                        "Driver": driver,
                        "Config": {
                            "command": sys.executable,
                            "args": [str(script), "${NOMAD_ALLOC_INDEX}"],
                        },
                        "Env": env or {},
                        "KillTimeout": kill_timeout,
                        "Resources": {"CPU": 100, "MemoryMB": 64, "Devices": devices or []},
                    }
                ],
            }
        ],
    }


async def call(
    s: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with s.request(method, url, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def register(s: aiohttp.ClientSession, nomad: NomadDouble, job: dict[str, Any]) -> None:
    status, body = await call(s, "POST", f"{nomad.url}/v1/jobs", {"Job": job})
    assert status == 200, body


async def scale(s: aiohttp.ClientSession, nomad: NomadDouble, count: int) -> tuple[int, Any]:
    body = {"Count": count, "Target": {"Group": "runner"}, "Message": "test"}
    return await call(s, "POST", f"{nomad.url}/v1/job/app/scale", body)


def running(nomad: NomadDouble, n: int) -> Any:
    return lambda: len(nomad.running("app")) == n and nomad.running("app")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_invalid_job_is_400(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """A string duration or a mismatched path ID is refused, as Nomad's decoder and checks do."""
    job = make_job(script)
    job["TaskGroups"][0]["Services"][0]["Checks"][0]["Interval"] = "1s"
    status, text = await call(http, "POST", f"{nomad.url}/v1/jobs", {"Job": job})
    assert status == 400
    assert "Interval" in text
    status, _ = await call(http, "POST", f"{nomad.url}/v1/job/other", {"Job": make_job(script)})
    assert status == 400
    assert nomad.jobs == {}
    status, text = await call(http, "GET", f"{nomad.url}/v1/job/app")
    assert (status, text) == (404, "job not found")


async def test_placement_env_interpolation_and_logs(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """The task runs with the NOMAD_* env, ${...} interpolated in args and Env; logs are served."""
    await register(http, nomad, make_job(script, env={"GREETING": "on-${NOMAD_PORT_http}"}))
    [alloc] = await wait_until(running(nomad, 1), what="a running allocation")
    url = f"{nomad.url}/v1/client/fs/logs/{alloc.id}"
    params = {"task": "runner", "type": "stdout", "plain": "true", "origin": "start"}

    async def first_line() -> Any:
        async with http.get(url, params=params) as resp:
            text = await resp.text()
        return resp.status == 200 and "\n" in text and json.loads(text.splitlines()[0])

    seen = await wait_until(first_line, what="the task's stdout")
    env = seen["env"]
    port = alloc.ports["http"]
    assert seen["argv"] == ["0"]
    assert env["NOMAD_PORT_http"] == str(port) == env["NOMAD_HOST_PORT_http"]
    assert env["NOMAD_ADDR_http"] == f"127.0.0.1:{port}"
    assert env["GREETING"] == f"on-{port}"
    assert env["NOMAD_ALLOC_ID"] == alloc.id
    assert env["NOMAD_ALLOC_NAME"] == "app.runner[0]"
    assert env["NOMAD_MEMORY_LIMIT"] == "64"
    assert env["NOMAD_TASK_DIR"] == str(alloc.dir / "runner" / "local")
    _, full = await call(http, "GET", f"{nomad.url}/v1/allocation/{alloc.id}")
    assert full["AllocatedResources"]["Shared"]["Ports"][0]["Value"] == port
    _, job = await call(http, "GET", f"{nomad.url}/v1/job/app")
    assert "Job" not in job
    assert job["TaskGroups"][0]["Tasks"][0]["LogConfig"]["MaxFiles"] == 10


async def test_dynamic_ports_come_from_nomads_range_not_the_kernels_ephemeral_one(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """Each allocation's port is its own, in Nomad's 20000-32000, and outside the range the
    kernel takes outgoing connections' ports from, so none can take it before the task binds."""
    await register(http, nomad, make_job(script, count=3))
    allocs = await wait_until(running(nomad, 3), what="three running allocations")
    ports = {a.ports["http"] for a in allocs}
    assert len(ports) == 3
    assert all(20000 <= p <= 32000 and p not in ephemeral_range() for p in ports)


async def test_group_service_registered_with_nomad_ids(
    nomad: NomadDouble, consul: ConsulDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """The group service lands in Consul under Nomad's ID and turns passing once serving."""
    await register(http, nomad, make_job(script))
    [alloc] = await wait_until(running(nomad, 1), what="a running allocation")
    entries = await wait_until(lambda: consul.entries("app", passing=True), what="passing")
    service = entries[0]["Service"]
    assert service["ID"] == f"_nomad-task-{alloc.id}-group-runner-app-http"
    assert service["Address"] == "127.0.0.1"
    assert service["Port"] == alloc.ports["http"]
    assert service["Meta"]["external-source"] == "nomad"
    assert entries[0]["Checks"][1]["CheckID"].startswith("_nomad-check-")


async def test_scale_up_fills_lowest_and_down_stops_highest(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """Scaling up places indexes 1 and 2; scaling down stops the highest name indexes first."""
    await register(http, nomad, make_job(script))
    await wait_until(running(nomad, 1), what="one allocation")
    assert (await scale(http, nomad, 3))[0] == 200
    allocs = await wait_until(running(nomad, 3), what="three allocations")
    assert [a.index for a in allocs] == [0, 1, 2]
    assert (await scale(http, nomad, 1))[0] == 200
    stopped = {a.index for a in nomad.allocations("app") if a.desired_status == "stop"}
    assert stopped == {1, 2}
    await wait_until(running(nomad, 1), what="one allocation left")
    assert (await scale(http, nomad, 6))[0] == 400


async def test_stopping_an_allocation_places_a_replacement(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """POST /v1/allocation/:id/stop replaces the allocation under the same name index."""
    await register(http, nomad, make_job(script, count=2))
    allocs = await wait_until(running(nomad, 2), what="two allocations")
    status, _ = await call(http, "POST", f"{nomad.url}/v1/allocation/{allocs[1].id}/stop")
    assert status == 200

    def replaced() -> bool:
        now = nomad.running("app")
        return len(now) == 2 and allocs[1].id not in {a.id for a in now}

    await wait_until(replaced, what="a replacement")
    assert [a.index for a in nomad.running("app")] == [0, 1]
    await wait_until(lambda: allocs[1].client_status == "complete", what="old one complete")
    assert allocs[1].proc is not None and gone(allocs[1].proc.pid)


async def test_check_restart_restarts_an_unhealthy_task(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path, tmp_path: Path
) -> None:
    """A failing check with check_restart Limit 2 restarts the task after Interval x 1."""
    sick = tmp_path / "sick"
    job = make_job(script, env={"SICK_FILE": str(sick)}, check_restart={"Limit": 2, "Grace": 0})
    await register(http, nomad, job)
    [alloc] = await wait_until(running(nomad, 1), what="a running allocation")
    first_pid = alloc.proc.pid if alloc.proc else 0
    sick.write_text("")

    def restarted() -> bool:
        return alloc.task_states["runner"]["Restarts"] >= 1

    await wait_until(restarted, what="a restart")
    events = [e["Type"] for e in alloc.task_states["runner"]["Events"]]
    assert "Restart Signaled" in events
    sick.unlink()

    def running_again() -> bool:
        # The restart is counted when it is signalled, before the old process has gone: wait
        # for the new process, not only for the status (which stays "running" throughout).
        proc = alloc.proc
        return alloc.client_status == "running" and proc is not None and proc.pid != first_pid

    await wait_until(running_again, what="running again, in a new process")


async def test_a_crash_counts_against_the_restart_policy(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """kill_task crashes the task: it restarts in place, then fails past Attempts."""
    await register(http, nomad, make_job(script))
    [alloc] = await wait_until(running(nomad, 1), what="a running allocation")
    for n in range(1, 4):
        pid = alloc.proc.pid if alloc.proc else 0
        nomad.kill_task(alloc.id)
        await wait_until(
            lambda n=n, pid=pid: (
                alloc.task_states["runner"]["Restarts"] == n
                and alloc.client_status == "running"
                and alloc.proc is not None
                and alloc.proc.pid != pid
            ),
            what=f"restart {n}",
        )
    nomad.kill_task(alloc.id)
    await wait_until(lambda: alloc.client_status == "failed", what="the allocation failing")
    assert alloc.task_states["runner"]["Failed"] is True


async def test_scale_is_blocked_during_a_deployment(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """With MaxParallel 1 a new version deploys; scaling is 400 until the deployment succeeds."""
    await register(http, nomad, make_job(script, max_parallel=1))
    status, text = await scale(http, nomad, 2)
    assert (status, text) == (400, "job scaling blocked due to active deployment")

    def succeeded() -> bool:
        return nomad.deployments("app")[-1]["Status"] == "successful"

    await wait_until(succeeded, what="the deployment to succeed")
    assert nomad.running("app")[0].healthy is True
    assert (await scale(http, nomad, 2))[0] == 200


CRASH = "import sys\nsys.exit(3)\n"
STUBBORN = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + SERVE
# Unlimited rescheduling, as Nomad's service default: a deployment with a ProgressDeadline
# waits for a replacement instead of failing at the first unhealthy allocation.
UNLIMITED = {"Attempts": 0, "Interval": 0, "Delay": 60 * S, "Unlimited": True}


def deployment(nomad: NomadDouble) -> dict[str, Any]:
    return nomad.deployments("app")[-1]


async def test_a_deployment_with_a_progress_deadline_outlives_a_failed_allocation(
    nomad: NomadDouble, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An unhealthy allocation that can be rescheduled leaves the deployment active: scale 400."""
    crash = tmp_path / "crash.py"
    crash.write_text(CRASH)
    await register(http, nomad, make_job(crash, max_parallel=1, reschedule=UNLIMITED))
    [alloc] = nomad.allocations("app")
    await wait_until(lambda: alloc.healthy is False, what="the allocation to be unhealthy")
    for _ in range(3):  # several ticks of the deployment watcher
        await asyncio.sleep(nomad.poll)
    assert deployment(nomad)["Status"] == "running"
    assert await scale(http, nomad, 0) == (400, "job scaling blocked due to active deployment")


async def test_a_deployment_fails_when_its_progress_deadline_passes(
    nomad: NomadDouble, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Past ProgressDeadline with no healthy allocation the deployment fails; scaling is free."""
    crash = tmp_path / "crash.py"
    crash.write_text(CRASH)
    deadlines = {"HealthyDeadline": 2 * S, "ProgressDeadline": 3 * S}
    job = make_job(crash, max_parallel=1, update=deadlines, reschedule=UNLIMITED)
    await register(http, nomad, job)
    await wait_until(lambda: deployment(nomad)["Status"] != "running", what="the deployment end")
    assert deployment(nomad)["Status"] == "failed"
    assert deployment(nomad)["StatusDescription"] == "Failed due to progress deadline"
    assert (await scale(http, nomad, 0))[0] == 200


async def test_a_failed_deployments_allocations_are_not_rescheduled(
    nomad: NomadDouble, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A failed allocation of the failed current deployment waits until a new job version."""
    crash = tmp_path / "crash.py"
    crash.write_text(CRASH)
    quick = {"Attempts": 0, "Interval": 0, "Delay": S, "Unlimited": True}
    job = make_job(crash, max_parallel=1, update={"ProgressDeadline": 0}, reschedule=quick)
    await register(http, nomad, job)
    [alloc] = nomad.allocations("app")
    await wait_until(lambda: deployment(nomad)["Status"] == "failed", what="the deployment fails")
    assert alloc.client_status == "failed"
    await asyncio.sleep(3 * quick["Delay"] / S)  # three reschedule delays: nothing may come
    assert [a.id for a in nomad.allocations("app")] == [alloc.id] and not alloc.next
    assert (await scale(http, nomad, 2))[0] == 200  # a new version: another deployment current
    await wait_until(lambda: alloc.next, what="the failed allocation to be rescheduled")


async def test_check_restart_rearms_its_grace_and_says_why(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path, tmp_path: Path
) -> None:
    """Each check_restart restart sets RestartReason and starts the grace period again."""
    sick = tmp_path / "sick"
    sick.write_text("")
    grace = 3
    job = make_job(
        script, env={"SICK_FILE": str(sick)}, check_restart={"Limit": 2, "Grace": grace * S}
    )
    await register(http, nomad, job)
    [alloc] = await wait_until(running(nomad, 1), what="a running allocation")

    def signalled() -> list[dict[str, Any]]:
        events = alloc.task_states["runner"]["Events"]
        return [e for e in events if e["Type"] == "Restart Signaled"]

    await wait_until(lambda: len(signalled()) >= 2, what="two restarts", timeout=60)
    first, second = signalled()[:2]
    assert first["RestartReason"] == 'healthcheck: check "health" unhealthy'
    assert (second["Time"] - first["Time"]) / S >= grace


async def test_kill_timeout_is_capped_at_max_kill_timeout(
    consul: ConsulDouble, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A task ignoring its kill signal is SIGKILLed after max_kill_timeout, not KillTimeout."""
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(STUBBORN)
    async with NomadDouble(consul, tmp_path / "n", poll=0.2, max_kill_timeout=1.0) as nomad:
        await register(http, nomad, make_job(stubborn, kill_timeout=600 * S))
        [alloc] = await wait_until(running(nomad, 1), what="a running allocation")
        await wait_until(lambda: consul.entries("app"), what="the service registered")
        pid = alloc.proc.pid if alloc.proc else 0
        assert (await call(http, "DELETE", f"{nomad.url}/v1/job/app"))[0] == 200
        await wait_until(lambda: gone(pid), what="the task killed", timeout=20)


async def test_a_changed_group_rolls_allocations(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """Re-registering a changed task replaces every allocation; PreserveCounts keeps Count."""
    await register(http, nomad, make_job(script, max_parallel=1))
    await wait_until(lambda: nomad.deployments("app")[-1]["Status"] == "successful", what="v0")
    assert (await scale(http, nomad, 2))[0] == 200
    await wait_until(lambda: nomad.deployments("app")[-1]["Status"] == "successful", what="v1")
    old = {a.id for a in nomad.running("app")}
    job = make_job(script, max_parallel=1, env={"V": "2"})
    status, body = await call(
        http, "POST", f"{nomad.url}/v1/job/app", {"Job": job, "PreserveCounts": True}
    )
    assert status == 200, body
    await wait_until(lambda: nomad.deployments("app")[-1]["Status"] == "successful", what="v2")
    now = nomad.running("app")
    assert len(now) == 2 and not old & {a.id for a in now}
    assert all(a.task["Env"] == {"V": "2"} for a in now)


async def test_blocking_allocations_query_wakes_on_change(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """A blocked allocations query returns once the table index moves past the given one."""
    await register(http, nomad, make_job(script))
    await wait_until(running(nomad, 1), what="one allocation")
    url = f"{nomad.url}/v1/job/app/allocations"
    async with http.get(url, params={"all": "true"}) as resp:
        index = int(resp.headers["X-Nomad-Index"])
    waiting = asyncio.create_task(
        call(http, "GET", url, params={"index": str(index), "wait": "60s"})
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await scale(http, nomad, 2)
    status, stubs = await asyncio.wait_for(waiting, DEADLINE)
    assert status == 200 and len(stubs) == 2
    assert (await call(http, "GET", url, params={"index": "1", "wait": "60"}))[0] == 400


async def test_deregister_kills_the_processes(
    nomad: NomadDouble, consul: ConsulDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """DELETE ?purge=true stops every allocation's process and deregisters its services."""
    await register(http, nomad, make_job(script, count=2))
    allocs = await wait_until(running(nomad, 2), what="two allocations")
    pids = [a.proc.pid for a in allocs if a.proc]
    assert (await call(http, "DELETE", f"{nomad.url}/v1/job/app", params={"purge": "true"}))[
        0
    ] == 200
    await wait_until(lambda: all(gone(p) for p in pids), what="processes gone")
    await wait_until(lambda: consul.entries("app") == [], what="services gone")
    assert (await call(http, "GET", f"{nomad.url}/v1/job/app"))[0] == 404


async def test_stop_leaves_no_process(
    consul: ConsulDouble, http: aiohttp.ClientSession, script: Path, tmp_path: Path
) -> None:
    """NomadDouble.stop() kills and reaps every process it started."""
    nomad = NomadDouble(consul, tmp_path / "n2", poll=0.2)
    await nomad.start()
    try:
        await register(http, nomad, make_job(script, count=2))
        allocs = await wait_until(running(nomad, 2), what="two allocations")
    finally:
        await nomad.stop()
    assert all(a.proc is not None and gone(a.proc.pid) for a in allocs)


async def test_other_drivers_fail_the_allocation(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """Only raw_exec runs: a docker task fails with a Driver Failure event and no reschedule."""
    await register(http, nomad, make_job(script, driver="docker"))
    await wait_until(lambda: nomad.allocations("app"), what="an allocation")
    [alloc] = nomad.allocations("app")
    await wait_until(lambda: alloc.client_status == "failed", what="a failed allocation")
    assert [e for e in alloc.task_states["runner"]["Events"] if e["Type"] == "Driver Failure"]


async def test_gpus_are_placed_only_where_they_fit(
    consul: ConsulDouble, http: aiohttp.ClientSession, script: Path, tmp_path: Path
) -> None:
    """An H100 request gets NVIDIA_VISIBLE_DEVICES; one past the node's GPUs is not placed."""
    gpus = [{"UUID": "GPU-aaaa", "Model": "NVIDIA H100 80GB HBM3", "MemoryMiB": 81559}]
    device = {
        "Name": "nvidia/gpu",
        "Count": 1,
        "Constraints": [
            {"LTarget": "${device.model}", "Operand": "regexp", "RTarget": "H100"},
            {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "79 GiB"},
        ],
    }
    async with NomadDouble(consul, tmp_path / "gpu", gpus=gpus, poll=0.2) as nomad:
        await register(http, nomad, make_job(script, count=2, devices=[device]))
        [alloc] = await wait_until(running(nomad, 1), what="one GPU allocation")
        assert alloc.gpus == ["GPU-aaaa"]
        assert len(nomad.allocations("app")) == 1
        log = alloc.dir / "alloc" / "logs" / "runner.stdout.0"
        # "running" means the process started; it prints its environment a moment later.
        await wait_until(
            lambda: log.exists() and '"NVIDIA_VISIBLE_DEVICES": "GPU-aaaa"' in log.read_text(),
            what="the task's environment with its GPU",
        )


async def test_unplaceable_gpus_show_in_evaluations_until_a_gpu_joins(
    consul: ConsulDouble, http: aiohttp.ClientSession, script: Path, tmp_path: Path
) -> None:
    """An eval ends complete with FailedTGAllocs and a blocked eval; a new GPU places it."""
    device = {
        "Name": "nvidia/gpu",
        "Count": 1,
        "Constraints": [{"LTarget": "${device.model}", "Operand": "regexp", "RTarget": "H100"}],
    }
    a100 = {"UUID": "GPU-a100", "Model": "NVIDIA A100-SXM4-80GB", "MemoryMiB": 81920}
    async with NomadDouble(consul, tmp_path / "evals", gpus=[a100], poll=0.2) as nomad:
        status, reply = await call(
            http, "POST", f"{nomad.url}/v1/jobs", {"Job": make_job(script, devices=[device])}
        )
        assert status == 200
        status, first = await call(http, "GET", f"{nomad.url}/v1/evaluation/{reply['EvalID']}")
        assert status == 200 and first["TriggeredBy"] == "job-register"

        def settled() -> Any:
            found = nomad.evals.by_id[reply["EvalID"]]
            return found if found["Status"] != "pending" else None

        done = await wait_until(settled, what="the register evaluation to settle")
        assert done["Status"] == "complete"
        metric = done["FailedTGAllocs"]["runner"]
        assert metric["ConstraintFiltered"] == {"missing devices": 1}
        assert (metric["NodesEvaluated"], metric["NodesExhausted"]) == (1, 0)
        status, listed = await call(http, "GET", f"{nomad.url}/v1/job/app/evaluations")
        blocked = next(e for e in listed if e["ID"] == done["BlockedEval"])
        assert (blocked["Status"], blocked["TriggeredBy"]) == ("blocked", "queued-allocs")
        assert nomad.allocations("app") == []
        status, _ = await call(http, "GET", f"{nomad.url}/v1/evaluation/nope")
        assert status == 404

        nomad.add_gpu({"UUID": "GPU-h100", "Model": "NVIDIA H100 80GB HBM3", "MemoryMiB": 81559})
        [alloc] = await wait_until(running(nomad, 1), what="the blocked placement to run")
        assert alloc.gpus == ["GPU-h100"]
        await wait_until(
            lambda: nomad.evals.by_id[blocked["ID"]]["Status"] == "complete",
            what="the blocked evaluation to complete",
        )
        assert nomad.evals.by_id[blocked["ID"]]["FailedTGAllocs"] is None

        # The H100 is taken: a second runner is exhausted, not filtered.
        status, scaled = await scale(http, nomad, 2)
        assert status == 200
        later = await wait_until(
            lambda: nomad.evals.by_id[scaled["EvalID"]]["FailedTGAllocs"],
            what="the scale evaluation to fail",
        )
        assert later["runner"]["DimensionExhausted"] == {"devices: no devices match request": 1}
        assert later["runner"]["ConstraintFiltered"] is None
        blocked_again = nomad.evals.by_id[nomad.evals.by_id[scaled["EvalID"]]["BlockedEval"]]
        assert blocked_again["Status"] == "blocked"

        # Scaled back: that evaluation succeeds, and Nomad cancels the blocked one, figures kept.
        status, back = await scale(http, nomad, 1)
        assert status == 200
        await wait_until(
            lambda: blocked_again["Status"] == "canceled", what="the blocked eval to be cancelled"
        )
        assert blocked_again["FailedTGAllocs"] == later
        assert blocked_again["StatusDescription"] == f'evaluation "{back["EvalID"]}" successful'


async def test_acl_token_is_required(
    consul: ConsulDouble, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With a token set, requests without X-Nomad-Token are 403."""
    async with NomadDouble(consul, tmp_path / "acl", token="t0k") as nomad:
        status, text = await call(http, "GET", f"{nomad.url}/v1/jobs")
        assert (status, text) == (403, "Permission denied")
        headers = {"X-Nomad-Token": "t0k"}
        assert (await call(http, "GET", f"{nomad.url}/v1/jobs", headers=headers))[0] == 200


async def test_a_changed_job_meta_replaces_every_allocation(
    nomad: NomadDouble, http: aiohttp.ClientSession, script: Path
) -> None:
    """A re-registration that changes only the job's Meta replaces the allocations at once, as
    Nomad does (it compares each task's meta merged with the job's)."""
    await register(http, nomad, make_job(script, count=2))
    await wait_until(running(nomad, 2), what="two running")
    old = {a.id for a in nomad.running("app")}
    job = make_job(script, count=2)
    job["Meta"] = {"yurt_job_digest": "other"}
    await register(http, nomad, job)
    await wait_until(
        lambda: len(nomad.running("app")) == 2 and not old & {a.id for a in nomad.running("app")},
        what="two new allocations",
    )
