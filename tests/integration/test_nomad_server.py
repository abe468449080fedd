"""``yurt server --backend nomad`` end to end, against the Nomad and Consul doubles.

The doubles run in the test's event loop; the server, ``yurt deploy`` and every runner are real
processes speaking real HTTP. Runners are Nomad allocations of raw_exec tasks that download their
payload from the server; the router finds them through Consul's blocking health queries.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.backends.nomad.naming import job_id

from doubles import ConsulDouble, NomadDouble
from support import DEADLINE, start_yurt, wait_until, yurt_command

ROOT = Path(__file__).resolve().parents[2]
SETUP_S = 6.0  # nomad_scaling_apps.SETUP_S: how long a runner of OneRunner loads
# Nomad's checks run at >= 1 s; a slow restart leaves a killed runner out of routing long
# enough for the test to see it, whatever the machine's load.
CONFIG = f"""
[scheduler]
interval = 0.1

[nomad]
python = {json.dumps(sys.executable)}
check_interval = 1.0
check_timeout = 1.0
restart_delay = 4.0
blocking_wait = 5.0
retries = 2

[consul]
blocking_wait = 5.0
router_check_interval = 1.0
"""


@dataclass
class Server:
    url: str
    proc: asyncio.subprocess.Process
    consul: ConsulDouble
    nomad: NomadDouble
    session: aiohttp.ClientSession

    async def apps(self) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/_yurt/apps") as resp:
            return {a["app_id"]: a for a in await resp.json()}

    async def post(self, url: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(url, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    def running(self, app_id: str) -> list[str]:
        return [a.id for a in self.nomad.running(job_id("yurt", app_id))]

    def count(self, app_id: str) -> int:
        count: int = self.nomad.jobs[job_id("yurt", app_id)]["TaskGroups"][0]["Count"]
        return count


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    consul = ConsulDouble()
    await consul.start()
    nomad = NomadDouble(consul, tmp_path / "nomad", poll=0.2)
    await nomad.start()
    config = tmp_path / "yurt.toml"
    config.write_text(CONFIG)
    log = tmp_path / "server.out"
    args = ["server", "--backend", "nomad", "--port", "0", "--data-dir", str(tmp_path / "data")]
    args += ["--nomad-addr", nomad.url, "--consul-addr", consul.url, "--config", str(config)]
    try:
        proc, base = await start_yurt(args, log, r"server at (http://\S+)")
    except BaseException:
        await nomad.stop()
        await consul.stop()
        raise
    try:
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield Server(base, proc, consul, nomad, session)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0, log.read_text()
        # Stopping the server leaves its runners (a restarted server finds them) but takes
        # the router out of Consul.
        assert consul.entries("yurt-router") == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nomad.stop()
        await consul.stop()


def without_eval(detail: str) -> str:
    """A placement failure's detail less the evaluation it names."""
    return re.sub(r" \(nomad eval status [0-9a-f]+\)$", "", detail)


async def deploy(server: Server, target: str) -> dict[str, Any]:
    code, out, err = await yurt_command("deploy", target, "--server", server.url, "--json")
    assert code == 0, err
    reply: dict[str, Any] = json.loads(out)
    return reply


async def test_deploy_call_scale_replace_and_recover(server: Server) -> None:
    """Deploy, call both ways, replace a 503 runner, route around a killed one, scale to zero."""
    echo = await deploy(server, "examples/echo.py::Echo")
    assert echo["app_id"] == "default/echo" and echo["outcome"] == "created"
    assert server.count("default/echo") == 0  # scaled to zero until called
    obedient = await deploy(server, "tests/integration/nomad_server_apps.py::Obedient")

    # The router announced itself in Consul, with a passing check.
    await wait_until(
        lambda: server.consul.entries("yurt-router", passing=True), what="yurt-router passing"
    )

    # Sync and queue calls through runners that Nomad placed and Consul found.
    assert await server.post(echo["url"], {"prompt": "hi"}) == (200, {"text": "echo: hi"})
    assert len(server.running("default/echo")) == 1
    async with server.session.post(echo["queue_url"], json={"prompt": "queued"}) as resp:
        sub = await resp.json()

    async def done() -> bool:
        async with server.session.get(sub["status_url"]) as resp:
            return resp.status == 200 and (await resp.json())["status"] == "COMPLETED"

    await wait_until(done, what="the queued echo")
    async with server.session.get(sub["response_url"]) as resp:
        assert (resp.status, await resp.json()) == (200, {"text": "echo: queued"})

    # A runner answering 503 is stopped through Nomad, which places a replacement.
    url = obedient["url"]
    status, first = await server.post(url, {})
    assert status == 200 and first["alloc"] in server.running("default/obedient")
    status, _ = await server.post(url, {"status": 503})
    assert status == 503
    await wait_until(
        lambda: ("POST", f"/v1/allocation/{first['alloc']}/stop") in server.nomad.requests,
        what="the 503 runner's allocation stopped",
    )

    async def replaced() -> str | None:
        status, body = await server.post(url, {})
        return body["alloc"] if status == 200 and body["alloc"] != first["alloc"] else None

    second = await wait_until(replaced, what="a replacement runner")
    assert first["alloc"] not in server.running("default/obedient")

    # A SIGKILLed runner leaves the routing set once its Consul check turns critical...
    server.nomad.kill_task(second)

    async def unroutable() -> bool:
        runners = (await server.apps())["default/obedient"]["runners"]
        return not any(r["runner_id"] == second and r["routable"] for r in runners)

    await wait_until(unroutable, what="the killed runner out of routing")
    # ...and queued requests complete on its replacement.
    subs = []
    for _ in range(4):
        async with server.session.post(obedient["queue_url"], json={"seconds": 0.2}) as resp:
            subs.append(await resp.json())

    async def all_done() -> bool:
        for s in subs:
            async with server.session.get(s["status_url"]) as resp:
                if resp.status != 200 or (await resp.json())["status"] != "COMPLETED":
                    return False
        return True

    await wait_until(all_done, what="the queued requests")
    for s in subs:
        async with server.session.get(s["response_url"]) as resp:
            assert resp.status == 200
            assert (await resp.json())["alloc"] in server.running("default/obedient")

    # The echo app went back to zero after keep_alive (30 s), and comes back when called.
    await wait_until(
        lambda: server.count("default/echo") == 0 and not server.running("default/echo"),
        timeout=DEADLINE + 30,
        what="echo scaled to zero",
    )
    assert await server.post(echo["url"], {"prompt": "again"}) == (200, {"text": "echo: again"})
    assert server.count("default/echo") == 1


async def unplaceable_metric(server: Server, app_id: str) -> str | None:
    """The app's ``yurt_runners_unplaceable`` value as /_yurt/metrics gives it."""
    async with server.session.get(f"{server.url}/_yurt/metrics") as resp:
        text = await resp.text()
    found = re.search(
        rf'^yurt_runners_unplaceable\{{app="{re.escape(app_id)}"\}} (\S+)$', text, re.M
    )
    return found.group(1) if found else None


def assert_no_h100(detail: str, app_id: str) -> None:
    """``detail`` is Nomad's reason for not placing a runner that asks for an H100."""
    assert detail.startswith(f"Nomad cannot place a runner of {app_id}: ")
    assert 'Constraint "missing devices": 1 node excluded by filter' in detail
    assert "1 nvidia/gpu (${device.model} regexp \\bH100\\b" in detail


async def test_a_runner_nomad_cannot_place_fails_its_callers_at_once(server: Server) -> None:
    """No node has an H100: a waiting call fails with Nomad's reason (not after startup_timeout);
    with nobody waiting the Count goes back to 0, which clears it, and the next call asks again
    and fails the same way once Nomad has evaluated it."""
    target = f"{ROOT}/tests/integration/nomad_server_apps.py::NeedsH100"
    app_id = (await deploy(server, target))["app_id"]
    # A submission is accepted (nothing has failed yet) and completes with Nomad's reason.
    status, submitted = await server.post(f"{server.url}/queue/{app_id}", {})
    assert status == 200, submitted

    async def result() -> Any:
        async with server.session.get(submitted["status_url"]) as resp:
            if (await resp.json())["status"] != "COMPLETED":
                return None
        async with server.session.get(submitted["response_url"]) as resp:
            return resp.status, await resp.json()

    status, body = await wait_until(result, what="the queued request to complete")
    assert status == 503, body
    assert body["error_type"] == "placement_failed"
    detail = body["detail"]
    assert_no_h100(detail, app_id)

    # Nobody waits now: the scheduler lowers the Count to 0 at its next pass, Nomad's evaluation
    # of that succeeds (cancelling the blocked one), and the failure clears (docs/nomad.md).
    async def lowered() -> bool:
        unplaced = (await server.apps())[app_id]["unplaced"]
        return server.count(app_id) == 0 and unplaced is None

    await wait_until(lowered, what="the Count back to 0 and the failure cleared")
    assert await unplaceable_metric(server, app_id) == "0.0"

    # The next call asks for a runner again and fails as soon as Nomad has evaluated the Count
    # (the session's timeout, DEADLINE, is well under the app's startup_timeout of 600 s).
    status, again = await server.post(f"{server.url}/{app_id}", {})
    assert (status, again["error_type"]) == (503, "placement_failed"), again
    assert without_eval(again["detail"]) == without_eval(detail)


async def test_a_kept_runner_nomad_cannot_place_refuses_callers_until_an_h100_joins(
    server: Server,
) -> None:
    """An app kept at one runner that no node can take: while Nomad's blocked evaluation holds,
    calls and submissions are refused at once and /_yurt/apps and the metric say why; an H100
    joining places the runner, which clears it."""
    target = f"{ROOT}/tests/integration/nomad_server_apps.py::NeedsH100Kept"
    app_id = (await deploy(server, target))["app_id"]

    async def unplaced() -> str | None:
        found: str | None = (await server.apps())[app_id]["unplaced"]
        return found

    # min_concurrency=1 holds the Count at 1 with nobody calling: nothing lowers it meanwhile.
    detail = await wait_until(unplaced, what="Nomad's placement failure")
    assert_no_h100(detail, app_id)
    assert server.count(app_id) == 1

    # While nothing can be placed, callers are told at once: a sync call and a submission.
    status, refused = await server.post(f"{server.url}/{app_id}", {})
    assert (status, refused["error_type"]) == (503, "placement_failed"), refused
    assert without_eval(refused["detail"]) == without_eval(detail)
    status, refused = await server.post(f"{server.url}/queue/{app_id}", {})
    assert (status, refused["error_type"]) == (503, "placement_failed"), refused
    assert without_eval(refused["detail"]) == without_eval(detail)
    assert await unplaceable_metric(server, app_id) == "1.0"

    # An H100 joins the node: the blocked evaluation places the runner and the failure clears.
    server.nomad.add_gpu({"UUID": "GPU-h100", "Model": "NVIDIA H100 80GB HBM3", "MemoryMiB": 81559})
    assert await wait_until(
        lambda: server.nomad.allocations(job_id("yurt", app_id)), what="the runner placed"
    )
    assert server.nomad.allocations(job_id("yurt", app_id))[0].gpus == ["GPU-h100"]

    async def cleared() -> bool:
        return await unplaced() is None

    await wait_until(cleared, what="the placement failure to clear")
    assert await unplaceable_metric(server, app_id) == "0.0"


async def test_a_burst_places_runners_while_earlier_ones_still_load(server: Server) -> None:
    """A burst after one runner was placed gets max_concurrency runners, none healthy yet."""
    target = f"{ROOT}/tests/integration/nomad_scaling_apps.py::Loading"
    app_id = (await deploy(server, target))["app_id"]
    job = job_id("yurt", app_id)

    def live() -> int:
        return sum(a.live for a in server.nomad.allocations(job))

    async def submit() -> None:
        status, body = await server.post(f"{server.url}/queue/{app_id}", {})
        assert status == 200, body

    await submit()
    await wait_until(lambda: server.count(app_id) == 1 and live() == 1, what="a first runner")
    for _ in range(7):  # 8 waiting, one runner each: max_concurrency (4) runners
        await submit()
    await wait_until(lambda: server.count(app_id) == 4 and live() == 4, what="four runners")
    assert server.consul.entries(job, passing=True) == []  # none of them has loaded


async def test_a_redeploy_of_one_runner_answers_every_request(server: Server) -> None:
    """Requests sent all through a redeploy of a one-runner app are answered, none waiting
    for a runner to load: the old revision serves until the new one passes its checks."""
    apps = f"{ROOT}/tests/integration/nomad_scaling_apps.py"
    first = await deploy(server, f"{apps}::OneRunner")
    url = first["url"]

    async def answers(revision: str) -> bool:
        status, body = await server.post(url, {})
        return status == 200 and body == {"revision": revision}

    await wait_until(lambda: answers("v1"), what="the first revision serving")
    results: list[tuple[int, Any, float]] = []
    done = asyncio.Event()

    async def call_all_along() -> None:
        while not done.is_set():
            began = time.monotonic()
            status, body = await server.post(url, {})
            results.append((status, body, time.monotonic() - began))
            await asyncio.sleep(0.05)

    caller = asyncio.create_task(call_all_along())
    try:
        second = await deploy(server, f"{apps}::OneRunnerV2")
        assert second["app_id"] == first["app_id"] and second["outcome"] == "updated"
        await wait_until(
            lambda: results and results[-1][1] == {"revision": "v2"},
            timeout=DEADLINE + 60,
            what="the second revision serving",
        )
        # The surge job is gone once the app's own job runs the new revision.
        await wait_until(
            lambda: (
                job_id("yurt", first["app_id"]) + "-surge" not in server.nomad.jobs
                or not server.nomad.running(job_id("yurt", first["app_id"]) + "-surge")
            ),
            what="the surge job stopped",
        )
    finally:
        done.set()
        await caller
    assert [r for r in results if r[0] != 200] == []
    assert max(r[2] for r in results) < SETUP_S, "a request waited for a runner to load"


async def test_runners_on_nomad_answer_the_router_only(server: Server) -> None:
    """A runner Nomad placed answers the router (which shows the token Consul discovery gave
    it) and 401 to a direct call; the token reaches the task through the job's Variable and
    the template, never the job body."""
    echo = await deploy(server, "examples/echo.py::Echo")
    assert await server.post(echo["url"], {"prompt": "hi"}) == (200, {"text": "echo: hi"})
    name = job_id("yurt", "default/echo")
    (entry,) = server.consul.entries(name, passing=True)
    direct = f"http://{entry['Service']['Address']}:{entry['Service']['Port']}"
    for path in ("/", "/_yurt/info"):
        async with server.session.post(direct + path, json={"prompt": "past"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error_type"] == "unauthorized"
    async with server.session.get(direct + "/_yurt/health") as resp:
        assert resp.status == 200
    variable = server.nomad.variables.get("default", f"nomad/jobs/{name}")
    assert variable is not None
    token = variable.items["YURT_RUNNER_TOKEN"]
    assert len(token) == 64
    assert token not in json.dumps(server.nomad.jobs[name])
    async with server.session.post(
        direct + "/", json={"prompt": "shown"}, headers={"x-yurt-runner-token": token}
    ) as resp:
        assert (resp.status, await resp.json()) == (200, {"text": "echo: shown"})
