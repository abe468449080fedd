"""Environments and secrets of apps served by ``yurt server --backend nomad``, against the
Nomad and Consul doubles.

The server, ``yurt deploy``, ``yurt secrets`` and every runner are real processes. A runner
task of an app with requirements starts with ``yurt.runner.bootstrap``, which builds the app's
environment in the node's cache (``[nomad] envs_dir``, a directory of this machine here) from
a wheel the test wrote into a local find-links directory, then becomes the runner. Secrets are
Nomad Variables the double keeps; the task's template reads the job's Variable into its
environment, as Nomad renders it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wheels import write_wheel
from yurt.backends.nomad.naming import job_id

from doubles import ConsulDouble, NomadDouble
from support import DEADLINE, ROOT, start_yurt, wait_until, yurt_command

pytestmark = pytest.mark.timeout(300)

ENV_APPS = f"{ROOT}/tests/integration/env_apps.py"
SECRET_APPS = f"{ROOT}/tests/integration/secret_apps.py"
SECRET = 's3cr3t-value "quoted" <&> line\nbreak'  # every character the template escapes


@dataclass
class Server:
    url: str
    log: Path
    envs: Path  # the node's environment cache
    nomad: NomadDouble
    session: aiohttp.ClientSession

    async def call(self, app: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(f"{self.url}/default/{app}", json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    def runner_logs(self, app: str) -> str:
        """Every stdout and stderr line the app's runner tasks wrote, all allocations."""
        text = ""
        for alloc in self.nomad.allocations(job_id("yurt", f"default/{app}")):
            for path in sorted((alloc.dir / "alloc" / "logs").glob("runner.*")):
                text += path.read_text()
        return text


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "yurt_test_pkg", "1.0", "VERSION = '1.0'\n")
    envs = tmp_path / "node-envs"
    config = tmp_path / "yurt.toml"
    config.write_text(
        f"""
[scheduler]
interval = 0.1

[envs]
pip_args = {json.dumps(["--no-index", "--find-links", str(wheels)])}

[nomad]
python = {json.dumps(sys.executable)}
envs_dir = {json.dumps(str(envs))}
check_interval = 1.0
check_timeout = 1.0
restart_delay = 1.0
blocking_wait = 5.0
retries = 2

[consul]
blocking_wait = 5.0
router_check_interval = 1.0
"""
    )
    consul = ConsulDouble()
    await consul.start()
    nomad = NomadDouble(consul, tmp_path / "nomad", poll=0.2)
    await nomad.start()
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
        timeout = aiohttp.ClientTimeout(total=DEADLINE * 2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield Server(base, log, envs, nomad, session)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nomad.stop()
        await consul.stop()


async def yurt_ok(*args: str) -> str:
    code, out, err = await yurt_command(*args)
    assert code == 0, err
    return out


async def test_runners_build_the_apps_environment_once_on_their_node(server: Server) -> None:
    """Two runners of an app whose requirement yurt's own environment lacks build its
    environment once in the node's cache, under its lock, and both import from it."""
    await yurt_ok("deploy", f"{ENV_APPS}::TwoRunners", "--server", server.url)
    status, body = await server.call("two-runners", {})
    assert status == 200, body
    assert body["version"] == "1.0"
    assert str(body["python"]).startswith(str(server.envs))
    await wait_until(
        lambda: server.runner_logs("two-runners").count('"runner_exec"') == 2,
        what="both runners past their bootstrap",
    )
    logs = server.runner_logs("two-runners")
    # The build is in the runners' log; one runner built, the other found it built.
    assert logs.count('"env_build_started"') == 1, logs
    assert logs.count('"env_ready"') == 1, logs
    [env] = [p for p in server.envs.iterdir() if p.is_dir()]
    assert (env / "yurt-env.json").is_file()


async def test_a_failing_requirement_fails_the_start_once_with_the_installers_lines(
    server: Server,
) -> None:
    """A requirement no index has fails the call with 503 runner_scheduling_failure quoting
    pip; the failure is recorded on the node, so the next start fails without installing."""
    await yurt_ok("deploy", f"{ENV_APPS}::PinsMissing", "--server", server.url)
    status, body = await server.call("pins-missing", {})
    assert status == 503, body
    assert body["error_type"] == "runner_scheduling_failure", body
    assert "environment did not build" in body["detail"], body
    assert "yurt_test_pkg==9.0" in body["detail"], body
    [failed] = list(server.envs.glob("*.failed"))
    assert [p for p in server.envs.iterdir() if p.is_dir()] == []  # nothing half-built

    # The next runner fails at once from the record, with no second install.
    status, again = await server.call("pins-missing", {})
    assert status == 503 and "environment did not build" in again["detail"], again
    logs = server.runner_logs("pins-missing")
    assert logs.count("yurt-runner-failure: environment:") >= 2, logs
    assert logs.count('"env_build_started"') == 1, logs
    assert failed.is_file()


async def test_a_secret_reaches_the_app_and_stays_out_of_jobs_and_logs(server: Server) -> None:
    """`yurt secrets set` on a Nomad server writes a Variable; a runner started after sees
    the value whole, while no job body, runner log or server log holds it, nor the token."""
    set_out = await yurt_ok("secrets", "set", "API_KEY", SECRET, "--server", server.url)
    assert "created API_KEY" in set_out
    listed = json.loads(await yurt_ok("secrets", "list", "--server", server.url, "--json"))
    assert [s["name"] for s in listed] == ["API_KEY"]
    assert server.nomad.variables.get("default", "yurt/secrets/API_KEY") is not None

    await yurt_ok("deploy", f"{SECRET_APPS}::NeedsToken", "--server", server.url)
    status, body = await server.call("needs-token", {"name": "NEEDED_TOKEN"})
    assert status == 503, body  # required, not set: the start fails naming it
    assert "NEEDED_TOKEN" in body["detail"], body

    await yurt_ok("deploy", f"{SECRET_APPS}::ShowEnv", "--server", server.url)
    status, body = await server.call("show-env", {"name": "API_KEY"})
    assert (status, body["value"]) == (200, SECRET), body

    job = job_id("yurt", "default/show-env")
    token = server.nomad.variables.get("default", f"nomad/jobs/{job}")
    assert token is not None
    assert set(token.items) == {"API_KEY", "YURT_PAYLOAD_TOKEN", "YURT_RUNNER_TOKEN"}
    jobs = json.dumps(server.nomad.jobs)
    async with server.session.get(f"{server.url}/_yurt/apps") as resp:
        apps = await resp.text()
    texts = {
        "jobs": jobs,
        "runner logs": server.runner_logs("show-env") + server.runner_logs("needs-token"),
        "server log": server.log.read_text(),
        "/_yurt/apps": apps,
    }
    for where, text in texts.items():
        for value in (SECRET, SECRET.splitlines()[0], token.items["YURT_PAYLOAD_TOKEN"]):
            assert value not in text, f"a secret value in the {where}"

    # Unset: the job's Variable loses it (runners started after no longer get it).
    await yurt_ok("secrets", "unset", "API_KEY", "--server", server.url)
    await wait_until(
        lambda: "API_KEY" not in server.nomad.variables.get("default", f"nomad/jobs/{job}").items,
        what="the job's Variable without the secret",
    )
    assert server.nomad.variables.get("default", "yurt/secrets/API_KEY") is None
