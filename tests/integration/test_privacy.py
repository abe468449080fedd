"""Secrets and private data stay private: what a runner sees, what the queue and data dir keep.

The server runs as a real process with the control plane's credentials in its environment, as
an operator would start it; apps are served by ``yurt run`` and by ``yurt server`` on each
backend (Nomad and Consul as the doubles, in the test's event loop).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.platform import Platform

from doubles import ConsulDouble, NomadDouble
from support import DEADLINE, fast_config, wait_until, yurt_command

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
APP = f"{Path(__file__).with_name('privacy_apps.py')}::Environment"
ADMIN_TOKEN = "admin-token-3b1f0c"
# What an operator's shell holds for the control plane: none of it may reach a runner.
SECRETS = {
    "YURT_ADMIN_TOKEN": ADMIN_TOKEN,
    "NOMAD_TOKEN": "nomad-token-7c2e91",
    "CONSUL_HTTP_TOKEN": "consul-token-5d8a40",
    "VAULT_TOKEN": "vault-token-1e6b27",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-9f3c55",
}
CREDENTIALS = {
    "Authorization": "Key caller-key-4a7d19",
    "Cookie": "session=caller-cookie-8e2f63",
    "Proxy-Authorization": "Basic caller-proxy-2c9b04",
    "X-Fal-Key": "caller-fal-key-6d1e38",
    "X-Api-Key": "caller-api-key-0b5f72",
}


def server_env(**more: str) -> dict[str, str]:
    """This environment, less the machine's own Nomad/Consul settings, plus SECRETS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    return {**env, **SECRETS, **more}


@asynccontextmanager
async def started(
    args: list[str], env: Mapping[str, str], log: Path, ready: str, umask: int = 0o022
) -> AsyncIterator[str]:
    """Run ``yurt ARGS`` with ``env`` until the block ends (SIGTERM, then wait); yields the URL
    its output announces (the first group of ``ready``)."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "yurt.cli", *args],
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            umask=umask,
        )

    def url() -> str | None:
        if proc.returncode is not None:
            pytest.fail(f"yurt {args[0]} exited {proc.returncode}:\n{log.read_text()}")
        found = re.search(ready, log.read_text())
        return found.group(1) if found else None

    try:
        yield await wait_until(url, what=f"yurt {args[0]} to serve")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), DEADLINE)
        assert code == 0, output(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def output(log: Path) -> str:
    return log.read_text()


async def post(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.post(url, json={}, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def assert_no_secret(env: dict[str, str]) -> None:
    """Neither a secret's name nor its value is in a runner's environment."""
    assert env.get("PATH"), env  # it is a real environment
    leaked = {k for k in SECRETS if k in env} | {
        k for k, v in env.items() if any(s in v for s in SECRETS.values())
    }
    assert not leaked, f"the runner sees {sorted(leaked)}"


async def deploy(server: str) -> str:
    code, out, err = await yurt_command(
        "deploy", APP, "--server", server, "--token", ADMIN_TOKEN, "--json"
    )
    assert code == 0, err
    url: str = json.loads(out)["url"]
    return url


async def test_yurt_run_gives_a_runner_none_of_the_servers_secrets(tmp_path: Path) -> None:
    """``yurt run``: an endpoint's os.environ holds none of the control plane's credentials."""
    args = ["run", APP, "--port", "0", "--data-dir", str(tmp_path / "data")]
    async with started(args, server_env(), tmp_path / "out", r"at (http://\S+)") as url:
        code, env = await post(url)
        assert code == 200, env
        assert_no_secret(env)


async def test_yurt_server_local_gives_a_runner_none_of_the_servers_secrets(
    tmp_path: Path,
) -> None:
    """``yurt server`` on the local backend: a deployed app sees none of the server's secrets."""
    args = ["server", "--port", "0", "--data-dir", str(tmp_path / "data")]
    async with started(args, server_env(), tmp_path / "out", r"server at (http://\S+)") as base:
        code, env = await post(await deploy(base))
        assert code == 200, env
        assert_no_secret(env)


async def test_yurt_server_nomad_gives_a_runner_none_of_the_servers_secrets(
    tmp_path: Path,
) -> None:
    """``yurt server`` on Nomad: the job hands a runner none of the server's secrets."""
    consul = ConsulDouble()
    await consul.start()
    nomad = NomadDouble(consul, tmp_path / "nomad", poll=0.2)
    try:
        await nomad.start()
        config = tmp_path / "yurt.toml"
        config.write_text(f"[nomad]\npython = {json.dumps(sys.executable)}\n")
        env = server_env(NOMAD_ADDR=nomad.url, CONSUL_HTTP_ADDR=consul.url)
        args = ["server", "--backend", "nomad", "--port", "0", "--config", str(config)]
        args += ["--data-dir", str(tmp_path / "data")]
        async with started(args, env, tmp_path / "out", r"server at (http://\S+)") as base:
            code, seen = await post(await deploy(base))
            assert code == 200, seen
            assert seen.get("NOMAD_ALLOC_ID")  # it ran as a Nomad allocation
            assert_no_secret(seen)
            assert nomad.url not in json.dumps(seen) and "CONSUL_HTTP_ADDR" not in seen
    finally:
        await nomad.stop()
        await consul.stop()


async def test_no_app_sees_the_authorization_its_caller_showed_yurt(tmp_path: Path) -> None:
    """A direct call and a websocket reach the app without ``Authorization`` (yurt's key or
    admin token) and ``Proxy-Authorization``; the caller's other headers arrive as sent."""
    args = ["run", APP, "--port", "0", "--data-dir", str(tmp_path / "data")]
    headers = {**CREDENTIALS, "X-Custom": "kept-3e8c21"}
    dropped = {"authorization", "proxy-authorization"}
    async with started(args, server_env(), tmp_path / "out", r"at (http://\S+)") as url:
        code, seen = await post(f"{url}/headers", headers)
        assert code == 200, seen
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.ws_connect(f"{url}/headers/ws", headers=headers) as ws,
        ):
            upgraded = await ws.receive_json(timeout=DEADLINE)
    for got in (seen, upgraded):
        assert not dropped & set(got), got
        assert got["x-custom"] == "kept-3e8c21"
        assert got["cookie"] == CREDENTIALS["Cookie"]  # a direct call's other headers are kept
        assert got["x-api-key"] == CREDENTIALS["X-Api-Key"]


async def test_the_queue_keeps_no_credential_and_the_data_dir_is_private(tmp_path: Path) -> None:
    """After a queued request, the disk holds none of its credentials and nothing is 0077."""
    data = tmp_path / "data"
    args = ["run", APP, "--port", "0", "--data-dir", str(data)]
    # A umask that would leave everything readable: yurt's modes must not depend on it.
    async with started(args, server_env(), tmp_path / "out", r"at (http://\S+)", 0) as url:
        base, app_id = url.rsplit("/", 2)[0], "/".join(url.rsplit("/", 2)[1:])
        headers = {**CREDENTIALS, "X-Custom": "kept-3e8c21"}
        code, sub = await post(f"{base}/queue/{app_id}/headers", headers)
        assert code == 200, sub
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with aiohttp.ClientSession(timeout=timeout) as s:

            async def done() -> bool:
                async with s.get(sub["status_url"]) as resp:
                    return resp.status == 200 and (await resp.json())["status"] == "COMPLETED"

            await wait_until(done, what="the queued request")
            async with s.get(sub["response_url"]) as resp:
                assert resp.status == 200
                seen = await resp.json()
        # The runner gets the caller's other headers, not its credentials.
        assert seen["x-custom"] == "kept-3e8c21"
        assert not {k.lower() for k in CREDENTIALS} & set(seen)
        assert_private(data)
    assert_private(data)  # and once the server has stopped (the WAL checkpointed)


def assert_private(data: Path) -> None:
    """No credential in the queue's files; ``find DATA -perm /077`` lists nothing."""
    queue = sorted(data.glob("queue.sqlite3*"))
    assert data / "queue.sqlite3" in queue
    stored = b"".join(p.read_bytes() for p in queue)
    assert b"kept-3e8c21" in stored  # what was stored is readable here
    for value in CREDENTIALS.values():
        assert value.split()[-1].encode() not in stored
    assert readable_by_others(data) == []


def readable_by_others(data: Path) -> list[str]:
    """What ``find DATA -perm /077`` lists."""
    found = subprocess.run(
        ["find", str(data), "-perm", "/077"], capture_output=True, text=True, check=True
    )
    return found.stdout.split()


async def test_a_data_dir_an_older_yurt_left_readable_is_narrowed(tmp_path: Path) -> None:
    """On start the data dir becomes 0700 and yurt's own files lose the group's and others'
    bits; a file of someone else's kept there is left as it was."""
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    for name in ("queue.sqlite3", "queue.sqlite3-wal", "webhook-secret", "logs/old.log"):
        (data / name).write_text("x")
    notes = data / "notes.txt"
    notes.write_text("mine")
    for path in (data, data / "logs", *data.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    platform = Platform(fast_config(data))
    await platform.start()
    await platform.stop()
    assert readable_by_others(data) == [str(notes)]


async def test_yurt_run_hides_its_environment_from_its_runners(tmp_path: Path) -> None:
    """``yurt run`` makes itself undumpable, so a runner of its user cannot read its environ.

    Linux then gives the server's /proc files to root, group included: run under another group,
    the server's /proc/PID/environ is root's group only if it hid itself. (A runner of the same
    user is refused that file then, which root, as tests run, would not be.)
    """
    if os.geteuid() != 0 or not sys.platform.startswith("linux") or not shutil.which("setpriv"):
        pytest.skip("needs Linux, setpriv and root (to start yurt under another group)")
    log = tmp_path / "out"
    args = ["run", APP, "--port", "0", "--data-dir", str(tmp_path / "data"), "--quiet"]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "setpriv", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m", "yurt.cli",
            *args, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT, env=server_env(),
        )  # fmt: skip
    try:

        def url() -> str | None:
            if proc.returncode is not None:
                pytest.fail(f"yurt run exited {proc.returncode}:\n{log.read_text()}")
            found = re.search(r"at (http://\S+)", log.read_text())
            return found.group(1) if found else None

        await wait_until(url, what="yurt run to serve")
        assert os.stat(f"/proc/{proc.pid}/environ").st_gid == 0, "yurt run is still dumpable"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), DEADLINE)
            except TimeoutError:
                proc.kill()
                await proc.wait()


NOBODY = 65534  # the group yurt runs under there: any but root's
