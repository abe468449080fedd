"""The Nomad double's Variables API and task templates behave as Nomad's do (``nomad_vars``)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.backends.nomad.appenv import secrets_template

from doubles import ConsulDouble, NomadDouble
from doubles.nomad_vars import go_json, parse_env, render
from support import DEADLINE, wait_until

S = 1_000_000_000
# Prints its environment as JSON on its first line, then sleeps until killed.
SHOW_ENV = "import json, os, time; print(json.dumps(dict(os.environ)), flush=True); time.sleep(600)"


@pytest.fixture
async def nomad(tmp_path: Path) -> AsyncIterator[NomadDouble]:
    async with ConsulDouble() as consul, NomadDouble(consul, tmp_path / "n", poll=0.2) as double:
        yield double


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as s:
        yield s


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_variables_read_write_list_and_delete(
    nomad: NomadDouble, http: aiohttp.ClientSession
) -> None:
    """PUT replaces the items, GET reads them (404 when absent), the list holds metadata only,
    DELETE answers 204 present or not; namespaces are apart."""
    url = f"{nomad.url}/v1/var/yurt/secrets/A"
    assert await call(http, "GET", url) == (404, "variable not found")
    status, put = await call(http, "PUT", url, {"Items": {"value": "one"}})
    assert (status, put["Items"], put["Path"]) == (200, {"value": "one"}, "yurt/secrets/A")
    await call(http, "PUT", url, {"Items": {"other": "two"}})
    status, got = await call(http, "GET", url)
    assert got["Items"] == {"other": "two"} and got["ModifyIndex"] > got["CreateIndex"]
    status, listed = await call(http, "GET", f"{nomad.url}/v1/vars?prefix=yurt/secrets/")
    assert [v["Path"] for v in listed] == ["yurt/secrets/A"]
    assert "Items" not in listed[0]
    assert await call(http, "GET", f"{url}?namespace=other") == (404, "variable not found")
    assert (await call(http, "DELETE", url))[0] == 204
    assert (await call(http, "DELETE", url))[0] == 204
    assert await call(http, "GET", url) == (404, "variable not found")


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("a", {"Items": {}}, "variable missing required Items object"),
        ("a", {}, "variable missing required Items object"),
        ("nomad", {"Items": {"k": "v"}}, "reserved top-level"),
        ("nomad/other", {"Items": {"k": "v"}}, "only paths at"),
        ("a b", {"Items": {"k": "v"}}, "invalid path"),
        ("a" * 129, {"Items": {"k": "v"}}, "invalid path"),
        ("big", {"Items": {"k": "v" * 65536}}, "limited to 64KiB"),
    ],
)
async def test_variable_writes_nomad_refuses(
    nomad: NomadDouble, http: aiohttp.ClientSession, path: str, body: Any, error: str
) -> None:
    """A write Nomad's validation refuses is a 400 with its message."""
    status, text = await call(http, "PUT", f"{nomad.url}/v1/var/{path}", body)
    assert status == 400 and error in text


def test_env_file_round_trip() -> None:
    """Any value rendered by the template (Go's toJSON) reads back whole through envparse."""
    items = {"A": 'x "y" \\ z', "B": "line\nnext\ttab", "C": "<&>\u2028é", "D": "a#b 'c'"}
    text = render(items)
    assert len(text.splitlines()) == len(items)  # one line each, newlines escaped
    assert "\\u003c\\u0026\\u003e\\u2028é" in go_json(items["C"])
    assert parse_env(text) == items
    assert parse_env("# comment\nexport E = plain # trailing\nF=''\n") == {"E": "plain"}
    with pytest.raises(ValueError, match="missing ="):
        parse_env("NOEQUALS\n")


def job(template: dict[str, Any], job_id: str = "app") -> dict[str, Any]:
    return {
        "ID": job_id,
        "Update": {"MaxParallel": 0},
        "TaskGroups": [
            {
                "Name": "runner",
                "Count": 1,
                "Scaling": {"Min": 0, "Max": 1},
                "RestartPolicy": {"Attempts": 0, "Interval": 60 * S, "Delay": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [
                    {
                        "Name": "runner",
                        "Driver": "raw_exec",
                        "Config": {"command": sys.executable, "args": ["-c", SHOW_ENV]},
                        "Env": {"KEY": "from-env", "OTHER": "kept"},
                        "Templates": [template],
                        "Resources": {"CPU": 100, "MemoryMB": 64},
                    }
                ],
            }
        ],
    }


def first_line(nomad: NomadDouble) -> dict[str, str] | None:
    [alloc] = nomad.allocations("app")
    out = alloc.dir / "alloc" / "logs" / "runner.stdout.0"
    text = out.read_text() if out.exists() else ""
    return json.loads(text.splitlines()[0]) if text.strip() else None


async def test_a_task_waits_for_its_variable_and_gets_its_items_as_env(
    nomad: NomadDouble, http: aiohttp.ClientSession
) -> None:
    """The task does not start until its job's Variable exists ("Missing" event); then its
    items are in the task's environment, over its Env, in a 0600 file in its secrets dir."""
    status, _ = await call(
        http, "POST", f"{nomad.url}/v1/jobs", {"Job": job(secrets_template("app"))}
    )
    assert status == 200
    await wait_until(
        lambda: any(
            e["Type"] == "Template"
            and "nomad.var.block(nomad/jobs/app@default.global)" in e["DisplayMessage"]
            for a in nomad.allocations("app")
            for e in a.task_states["runner"]["Events"]
        ),
        what="the Missing event",
    )
    assert first_line(nomad) is None  # not started
    value = 'multi\nline "quoted"'
    await call(http, "PUT", f"{nomad.url}/v1/var/nomad/jobs/app", {"Items": {"KEY": value}})
    env = await wait_until(lambda: first_line(nomad), what="the task started")
    assert (env["KEY"], env["OTHER"]) == (value, "kept")
    [alloc] = nomad.allocations("app")
    rendered = alloc.dir / "runner" / "secrets" / "yurt.env"
    assert rendered.stat().st_mode & 0o777 == 0o600


async def test_a_template_reading_another_jobs_variable_fails_the_task(
    nomad: NomadDouble, http: aiohttp.ClientSession
) -> None:
    """A task's identity reads only its own job's Variables: another path fails the task."""
    await call(http, "PUT", f"{nomad.url}/v1/var/nomad/jobs/other", {"Items": {"K": "v"}})
    await call(http, "POST", f"{nomad.url}/v1/jobs", {"Job": job(secrets_template("other"))})
    await wait_until(
        lambda: [a.client_status for a in nomad.allocations("app")] == ["failed"],
        what="the task failed",
    )
    [alloc] = nomad.allocations("app")
    events = [e["DisplayMessage"] for e in alloc.task_states["runner"]["Events"]]
    assert any("Template failed" in e and "Permission denied" in e for e in events), events


async def test_a_template_nomad_would_refuse_is_a_400(
    nomad: NomadDouble, http: aiohttp.ClientSession
) -> None:
    """A template without a destination, or an env template changed by signal, is refused."""
    bad = {**secrets_template("app"), "DestPath": "", "ChangeMode": "signal"}
    status, text = await call(http, "POST", f"{nomad.url}/v1/jobs", {"Job": job(bad)})
    assert status == 400
    assert "Must specify a destination" in text and "signal change mode" in text
