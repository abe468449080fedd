"""``yurt secrets`` on the local backend: a real ``yurt server``, real ``yurt secrets`` and
``yurt deploy`` commands, real runner processes reading their environment."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support import DEADLINE, ROOT, start_yurt, wait_until, yurt_command

APPS = "tests/integration/secret_apps.py"
API = "/_yurt/api/v1"
TOKEN = "admin-" + secrets.token_hex(8)
CONFIG = """
[scheduler]
interval = 0.1

[local]
kill_after = 1.0

[local.backoff]
step = 0.2
cap = 0.5
"""

pytestmark = pytest.mark.timeout(300)


@asynccontextmanager
async def yurt_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """``yurt server`` with an admin token, its data in ``tmp_path/data``; yields its URL and
    the file its output goes to."""
    config = tmp_path / "yurt.toml"
    config.write_text(CONFIG)
    args = ["server", "--port", "0", "--data-dir", str(tmp_path / "data"), "--config", str(config)]
    log = tmp_path / "server.out"
    proc, base = await start_yurt([*args, "--admin-token", TOKEN], log, r"server at (http://\S+)")
    try:
        yield base, log
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def secrets_command(base: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """``yurt secrets ARGS --server BASE --token TOKEN``, ``stdin`` piped in."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "yurt.cli", "secrets", *args, "--server", base],
        "--token",
        TOKEN,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), DEADLINE)
    return proc.returncode or 0, out.decode(), err.decode()


async def deploy(base: str, cls: str) -> dict[str, Any]:
    code, out, err = await yurt_command(
        "deploy", f"{APPS}::{cls}", "--server", base, "--token", TOKEN, "--json"
    )
    assert code == 0, err
    reply: dict[str, Any] = json.loads(out)
    return reply


async def call(s: aiohttp.ClientSession, url: str, name: str) -> tuple[int, Any, str | None]:
    """(status, decoded JSON, X-Yurt-Error-Type) of a call reading the variable ``name``."""
    async with s.post(url, json={"name": name}) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body, resp.headers.get("x-yurt-error-type")


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_secret_reaches_runners_and_nothing_else(tmp_path: Path) -> None:
    """A secret set with ``yurt secrets set`` (value on stdin) is in a deployed app's
    ``os.environ``; ``list`` shows its name only; the value is in no file of the data dir, not
    in the server's output, not in ``/_yurt/apps`` nor the admin API; after ``unset`` a runner
    started later does not have it."""
    value = "hf_" + secrets.token_hex(16)
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path) as (base, log), aiohttp.ClientSession(timeout=timeout) as s:
        code, out, err = await secrets_command(base, "set", "HF_TOKEN", stdin=f"{value}\n".encode())
        assert (code, out.strip()) == (0, "yurt: created HF_TOKEN"), err
        app = await deploy(base, "ShowEnv")
        status, seen, _ = await call(s, app["url"], "HF_TOKEN")
        assert (status, seen["value"]) == (200, value)

        code, out, err = await secrets_command(base, "list", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert [e["name"] for e in listed] == ["HF_TOKEN"] and value not in out
        code, out, _ = await secrets_command(base, "list")
        assert out.startswith("HF_TOKEN\t") and value not in out

        async with s.get(f"{base}/_yurt/apps") as resp:
            assert value not in await resp.text()
        headers = {"authorization": f"Bearer {TOKEN}"}
        for path in ("apps", "apps/default/show-env", "secrets"):
            async with s.get(f"{base}{API}/{path}", headers=headers) as resp:
                assert resp.status == 200 and value not in await resp.text()
        data = tmp_path / "data"
        assert (data / "secrets.json").stat().st_mode & 0o777 == 0o600
        assert "HF_TOKEN" in (data / "secrets.json").read_text()
        assert files_holding(data, value.encode()) == []

        code, out, err = await secrets_command(base, "unset", "HF_TOKEN")
        assert (code, out.strip()) == (0, "yurt: unset HF_TOKEN"), err

        async def first_runner_gone() -> bool:
            async with s.get(f"{base}/_yurt/apps") as resp:
                apps = {a["app_id"]: a for a in await resp.json()}
            return not apps["default/show-env"]["runners"]

        await wait_until(first_runner_gone, what="the runner to stop after its keep_alive")
        status, later, _ = await call(s, app["url"], "HF_TOKEN")
        assert status == 200 and later["pid"] != seen["pid"]
        assert later["value"] is None
        code, _, err = await secrets_command(base, "unset", "HF_TOKEN")
        assert code == 1 and "no secret 'HF_TOKEN'" in err, err
    assert value not in log.read_text()
    assert files_holding(tmp_path / "data", value.encode()) == []


async def test_missing_required_secret_fails_start_with_clear_503(tmp_path: Path) -> None:
    """An app whose ``required_secrets`` names an unset secret answers 503
    runner_scheduling_failure naming it; once set, a new runner starts and has it."""
    value = "tok-" + secrets.token_hex(16)
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path) as (base, log), aiohttp.ClientSession(timeout=timeout) as s:
        app = await deploy(base, "NeedsToken")
        status, body, error_type = await call(s, app["url"], "NEEDED_TOKEN")
        assert (status, error_type, body["error_type"]) == (
            503,
            "runner_scheduling_failure",
            "runner_scheduling_failure",
        ), body
        assert "NEEDED_TOKEN" in body["detail"] and "yurt secrets set" in body["detail"]

        code, _, err = await secrets_command(base, "set", "NEEDED_TOKEN", value)
        assert code == 0, err

        async def served() -> bool:
            status, body, _ = await call(s, app["url"], "NEEDED_TOKEN")
            assert status in (200, 503), body
            return status == 200 and body["value"] == value

        await wait_until(served, what="a runner started with the secret set")
    assert value not in log.read_text()


async def test_secret_names_and_auth_are_checked(tmp_path: Path) -> None:
    """The secrets routes want the admin token, refuse a name that is not an environment
    variable's or that configures yurt, Nomad or Consul, and answer JSON with detail and
    error_type, quoting no value."""
    value = "v-" + secrets.token_hex(8)
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path) as (base, _), aiohttp.ClientSession(timeout=timeout) as s:
        async with s.get(f"{base}{API}/secrets") as resp:
            assert (resp.status, (await resp.json())["error_type"]) == (401, "unauthorized")
        async with s.put(f"{base}{API}/secrets/HF_TOKEN", json={"value": value}) as resp:
            assert resp.status == 401
        headers = {"authorization": f"Bearer {TOKEN}"}
        for name in ("1ABC", "A-B", "NOMAD_TOKEN", "CONSUL_HTTP_TOKEN", "YURT_ADMIN_TOKEN"):
            url = f"{base}{API}/secrets/{name}"
            async with s.put(url, json={"value": value}, headers=headers) as resp:
                body = await resp.json()
                assert (resp.status, body["error_type"]) == (422, "bad_request"), body
                assert name in body["detail"] and value not in json.dumps(body)
        async with s.put(f"{base}{API}/secrets/OK", json={"val": value}, headers=headers) as resp:
            body = await resp.text()
            assert resp.status == 422 and value not in body
        code, _, err = await secrets_command(base, "set", "NOMAD_TOKEN", value)
        assert code == 1 and "NOMAD_TOKEN" in err and value not in err
        async with s.get(f"{base}{API}/secrets", headers=headers) as resp:
            assert (resp.status, await resp.json()) == (200, [])


async def test_secrets_that_do_not_open_fail_the_start_not_the_server(tmp_path: Path) -> None:
    """A secrets file altered behind the server's back fails runner starts with a 503 naming
    the secret (never its value), and the server keeps answering."""
    value = "v-" + secrets.token_hex(16)
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with yurt_server(tmp_path) as (base, log), aiohttp.ClientSession(timeout=timeout) as s:
        code, _, err = await secrets_command(base, "set", "API_KEY", value)
        assert code == 0, err
        path = tmp_path / "data" / "secrets.json"
        entries = json.loads(path.read_text())
        entries["API_KEY"]["sealed"] = "AAAA" + entries["API_KEY"]["sealed"][4:]
        path.write_text(json.dumps(entries))
        app = await deploy(base, "ShowEnv")
        status, body, error_type = await call(s, app["url"], "API_KEY")
        assert (status, error_type) == (503, "runner_scheduling_failure"), body
        assert "API_KEY" in body["detail"] and "does not open" in body["detail"]
        code, out, err = await secrets_command(base, "list")
        assert code == 0 and out.startswith("API_KEY\t"), err
    assert value not in log.read_text()
