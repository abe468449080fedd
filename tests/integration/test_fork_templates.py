"""Runners forked from a warm template (docs/cold-starts.md), on the local backend, with real
processes: they serve, scale, stop by the same rules as fresh ones and leave nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from fork_apps import Clinging, Forked, Fresh, Kept, Passing, Stubborn, Threaded, TwoGpus
from test_gpu_fail_fast import FAKE_PYNVML, H100

import yurt
from yurt.backends import templates
from yurt.backends.template_pool import TemplatePool
from yurt.config import LocalBackendConfig
from yurt.errors import AppDefinitionError
from yurt.platform import Platform
from yurt.runner.contract import EXIT_PAYLOAD, runner_argv

from support import fast_config, served, wait_until

pytestmark = pytest.mark.timeout(180)


def parent_of(pid: int) -> int | None:
    """The parent pid of a live (not zombie) process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[1])


def prepend_pythonpath(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Put ``folder`` first on the PYTHONPATH the runners and templates inherit (which may be
    unset, as under tox)."""
    rest = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), rest]).rstrip(os.pathsep))


def alive(pid: int) -> bool:
    return parent_of(pid) is not None


def template_pids(platform: Platform) -> list[int]:
    return list(platform.backend.templates.pids().values())  # type: ignore[attr-defined]


def runner_pids(platform: Platform, app_id: str) -> list[int]:
    return [v.pid for v in platform.backend.runners(app_id) if v.pid]


async def test_forked_runner_serves_scales_to_zero_and_back(tmp_path: Path) -> None:
    """A runner forked from the template serves; after keep_alive it goes, and the next request
    forks a new one; at stop no template or runner process is left."""
    async with served(Forked, tmp_path) as app:
        (template,) = await wait_until(lambda: template_pids(app.platform), what="a template")
        status, body, _ = await app.post(json={})
        assert status == 200
        first = int(body["text"].split()[1])
        assert parent_of(first) == template
        await wait_until(lambda: not app.platform.backend.runners(app.app_id), what="zero")
        await wait_until(lambda: not alive(first), what="the first runner's exit")
        status, body, _ = await app.post(json={})
        assert status == 200
        second = int(body["text"].split()[1])
        assert second != first and parent_of(second) == template
    assert not alive(template) and not alive(second)


async def test_forked_runner_is_killed_past_its_grace_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked runner whose teardown never ends is gone about kill_after seconds past its grace
    (its own deadline, else the backend's SIGKILL), and the process it started with it: the
    rules of a fresh runner."""
    child_pid = tmp_path / "child.pid"
    monkeypatch.setenv("YURT_TEST_CHILD_PID", str(child_pid))
    async with served(Stubborn, tmp_path / "data") as app:
        (template,) = await wait_until(lambda: template_pids(app.platform), what="template")
        status, body, _ = await app.post(json={})
        assert status == 200
        runner = int(body["text"].split()[1])
        assert parent_of(runner) == template
        child = int(child_pid.read_text())
        assert alive(child)
        (view,) = app.platform.backend.runners(app.app_id)
        t0 = time.monotonic()
        await app.platform.backend.stop_runner(
            app.app_id, view.runner_id, reason="test", replace=False
        )
        await wait_until(lambda: not alive(runner), what="the runner gone")
        # grace 0.5 s, kill_after 3 s (fast_config): the teardown is given its time
        assert time.monotonic() - t0 >= 3.0
        await wait_until(lambda: not alive(child), what="its child killed")
        await wait_until(lambda: not app.platform.backend.runners(app.app_id), what="forgotten")


async def test_template_with_a_thread_falls_back_to_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template whose preload started a thread does not fork: the runner starts fresh (a
    child of the server), serves, and the reason is logged once."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "starts_a_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), name='sleeper', daemon=True).start()\n"
    )
    prepend_pythonpath(monkeypatch, modules)
    with structlog.testing.capture_logs() as logs:
        async with served(Threaded, tmp_path / "data") as app:
            await wait_until(lambda: template_pids(app.platform), what="a template")
            for _ in range(2):
                status, body, _ = await app.post(json={})
                assert status == 200
                pid = int(body["text"].split()[1])
                assert parent_of(pid) == os.getpid()
                await app.platform.backend.set_target(app.app_id, 0)
                await wait_until(lambda p=pid: not alive(p), what="the runner's exit")
    refusals = [e for e in logs if e["event"] == "runner_not_forked" and "thread" in e["why"]]
    assert len(refusals) == 1
    assert "sleeper" in refusals[0]["why"]


async def test_a_template_whose_thread_ended_forks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template refused while a thread its preload started ran: once the thread has ended it
    tells the server, and the next cold start is forked from it (not fresh until a preload)."""
    modules, gate = tmp_path / "modules", tmp_path / "gate"
    modules.mkdir()
    (modules / "waits_for_a_gate.py").write_text(
        "import os, threading, time\n"
        "def wait():\n"
        f"    while not os.path.exists({str(gate)!r}):\n"
        "        time.sleep(0.05)\n"
        "threading.Thread(target=wait, name='gatekeeper', daemon=True).start()\n"
    )
    prepend_pythonpath(monkeypatch, modules)
    with structlog.testing.capture_logs() as logs:
        async with served(Passing, tmp_path / "data") as app:
            (template,) = await wait_until(lambda: template_pids(app.platform), what="template")
            status, body, _ = await app.post(json={})
            assert status == 200
            fresh = int(body["text"].split()[1])
            assert parent_of(fresh) == os.getpid()
            await app.platform.backend.set_target(app.app_id, 0)
            await wait_until(lambda: not alive(fresh), what="the fresh runner's exit")
            gate.touch()
            await wait_until(
                lambda: any(e["event"] == "template_fork_safe" for e in logs),
                what="the template saying forking is safe again",
            )
            status, body, _ = await app.post(json={})
            assert status == 200
            assert parent_of(int(body["text"].split()[1])) == template
    assert any("gatekeeper" in e.get("why", "") for e in logs if e["event"] == "runner_not_forked")


async def test_template_crash_is_survived(tmp_path: Path) -> None:
    """A template killed outright: its runner goes on serving and stops as any other, a new
    template starts, and the next runner is forked from the new one."""
    async with served(Kept, tmp_path) as app:
        (old,) = await wait_until(lambda: template_pids(app.platform), what="a template")
        status, body, _ = await app.post(json={})
        assert status == 200
        (runner,) = runner_pids(app.platform, app.app_id)
        assert body["text"] == f"pid {runner}" and parent_of(runner) == old
        os.kill(old, signal.SIGKILL)
        (new,) = await wait_until(
            lambda: [p for p in template_pids(app.platform) if p != old], what="a new template"
        )
        status, body, _ = await app.post(json={})
        assert status == 200 and body["text"] == f"pid {runner}"
        (view,) = app.platform.backend.runners(app.app_id)
        await app.platform.backend.stop_runner(
            app.app_id, view.runner_id, reason="t", replace=False
        )
        # Its exit is learned without the template that forked it (through a pidfd).
        await wait_until(lambda: not app.platform.backend.runners(app.app_id), what="its exit")
        assert not alive(runner)
        status, body, _ = await app.post(json={})
        assert status == 200
        replacement = int(body["text"].split()[1])
        assert replacement != runner and parent_of(replacement) == new


@pytest.mark.parametrize("where", ["app", "config"])
async def test_fork_runners_false_gives_a_fresh_process(tmp_path: Path, where: str) -> None:
    """fork_runners = False, on the App or in [local]: no template, each runner a fresh
    interpreter started by the server."""
    config = fast_config(tmp_path)
    cls: type[yurt.App] = Fresh
    if where == "config":
        local = LocalBackendConfig.model_validate(
            config.local.model_dump() | {"fork_runners": False}
        )
        config = config.model_copy(update={"local": local})
        cls = Forked
    platform = Platform(config)
    await platform.start()
    try:
        app_id = await platform.add_app(cls)
        assert template_pids(platform) == []
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{platform.url}/{app_id}", json={}) as resp,
        ):
            assert resp.status == 200
            pid = int((await resp.json())["text"].split()[1])
        assert parent_of(pid) == os.getpid()
        assert template_pids(platform) == []
    finally:
        await platform.stop()
    assert not alive(pid)


@pytest.fixture
def fake_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Two H100s through a fake pynvml, for this process and the runners it starts."""
    folder = tmp_path / "fake-nvml"
    folder.mkdir()
    (folder / "pynvml.py").write_text(FAKE_PYNVML.format(devices=[H100, H100]))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(__import__("sys").modules, "pynvml", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    prepend_pythonpath(monkeypatch, folder)
    yield folder


async def test_two_forked_runners_each_see_only_their_gpu(
    tmp_path: Path, fake_nvml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runners forked from one template each get one GPU of their own in
    CUDA_VISIBLE_DEVICES, set before their setup() runs."""
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("YURT_TEST_SEEN", str(seen))
    async with served(TwoGpus, tmp_path / "data") as app:
        (template,) = await wait_until(lambda: template_pids(app.platform), what="a template")
        await wait_until(lambda: len(app.healthy()) == 2, what="two runners")
        # Runners started at deploy, while the template came up, started fresh: each is
        # replaced (min_concurrency) by one forked from the now ready template.
        backend = app.platform.backend
        for view in backend.runners(app.app_id):
            if parent_of(view.pid or 0) != template:
                await backend.stop_runner(app.app_id, view.runner_id, reason="t", replace=True)

        def forked() -> list[int]:
            pids = [pid for pid in runner_pids(app.platform, app.app_id) if alive(pid)]
            ours = [pid for pid in pids if parent_of(pid) == template]
            return ours if len(ours) == 2 and len(app.healthy()) == 2 else []

        pids = await wait_until(forked, what="two forked runners")
        found = {pid: (seen / str(pid)).read_text() for pid in pids}
        assert sorted(found.values()) == ["GPU-fake-0", "GPU-fake-1"]


def test_bad_fork_settings_fail_at_class_creation() -> None:
    """fork_runners must be a bool and preload a list of module names, checked where the
    class is written."""
    with pytest.raises(AppDefinitionError, match="fork_runners must be True"):

        class A(Forked, fork_runners="no"):  # type: ignore[arg-type]
            pass

    with pytest.raises(AppDefinitionError, match="preload must be a list of module names"):

        class B(Forked):
            preload = ["torch", "not a module"]


APP_FILE = """
import os

import helper_mod
import yurt

REVISION = {revision}


class Versioned(yurt.App, keep_alive=300):
    @yurt.endpoint("/")
    def generate(self) -> dict:
        return {{"helper": helper_mod.VERSION, "pid": os.getpid()}}
"""


async def test_new_revision_loads_the_apps_own_modules_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module of the app's own that changed on disk between two revisions is imported anew
    for the second: its forked runner does not get the copy the template imported first."""
    from yurt.loader import load_app
    from yurt.packaging import pack
    from yurt.spec import build_spec

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "helper_mod.py").write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(shared))
    prepend_pythonpath(monkeypatch, shared)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    app_file = app_dir / "versioned_app.py"
    app_file.write_text(APP_FILE.format(revision=1))
    async with served(load_app(f"{app_file}::Versioned"), tmp_path / "data") as app:
        (template,) = await wait_until(lambda: template_pids(app.platform), what="a template")
        status, body, _ = await app.post()
        assert status == 200 and body["helper"] == 1
        assert parent_of(body["pid"]) == template
        # Another size: a .pyc is checked by the source's size and mtime (in whole seconds).
        (shared / "helper_mod.py").write_text("VERSION = 2  # the second\n")
        app_file.write_text(APP_FILE.format(revision=2))
        second_cls = load_app(f"{app_file}::Versioned")
        header = app.platform.store.put_payload(pack(second_cls))
        await app.platform.deploy(app.app_id, build_spec(second_cls), header.sha256)

        async def second() -> Any:
            status, body, _ = await app.post()
            return body if status == 200 and body["helper"] == 2 else None

        body = await wait_until(second, what="the second revision serving")
        assert parent_of(body["pid"]) == template


async def test_a_child_reported_gone_before_its_fork_returns_is_seen_to_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked runner that fails at once, its exit reported before its fork call has taken in
    the reply, still ends: ``wait()`` returns its exit code, and no pidfd is opened on its pid."""
    template = templates.Template("t", sys.executable, dict(os.environ), tmp_path / "t.log")
    await template.start(timeout=60)
    real_reader = templates._reader

    async def late_reader(fd: int) -> asyncio.StreamReader:
        # As under load: the template's exit message is handled before the reply is taken in.
        await wait_until(lambda: template.early_exits or None, what="the early exit")
        return await real_reader(fd)

    monkeypatch.setattr(templates, "_reader", late_reader)
    listener = socket.socket()
    try:
        argv = runner_argv(
            payload=str(tmp_path / "missing.yurt"),
            fd=listener.fileno(),
            host="127.0.0.1",
            port=0,
            runner_id="r-early",
        )
        child = await template.fork("r-early", argv, dict(os.environ), listener.fileno())
        assert await asyncio.wait_for(child.wait(), 60) == EXIT_PAYLOAD
        assert child.pid not in template.children and not template.early_exits
    finally:
        listener.close()
        await template.close()


# ``python -c SUPERVISOR PAYLOAD CHILD_PID_FILE``: a backend in miniature, which starts a
# template, has it fork one runner of PAYLOAD (named with its own pid as --parent-pid, as the
# local backend does), prints the runner's pid and waits to be killed.
SUPERVISOR = textwrap.dedent("""
    import asyncio, os, socket, sys
    from pathlib import Path
    from yurt.backends.templates import Template
    from yurt.runner.contract import runner_argv

    async def main():
        payload, child_pid = sys.argv[1:3]
        template = Template("t", sys.executable, dict(os.environ), Path(payload + ".log"))
        await template.start(timeout=120)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        argv = runner_argv(
            payload=payload, fd=sock.fileno(), host="127.0.0.1",
            port=sock.getsockname()[1], runner_id="r-1", parent_pid=os.getpid(),
        )
        env = {**os.environ, "YURT_TEST_CHILD_PID": child_pid}
        child = await template.fork("r-1", argv, env, sock.fileno())
        print(child.pid, template.pid, flush=True)
        await asyncio.sleep(1000)

    asyncio.run(main())
""")


async def test_a_forked_runner_whose_backend_is_killed_takes_its_group_with_it(
    tmp_path: Path,
) -> None:
    """A backend killed with SIGKILL cleans up nothing: its forked runner (whose parent is the
    template) sees the backend gone, drains, and kills what its app started, even a process
    that ignores SIGTERM, as a fresh runner does."""
    from yurt.packaging import write_payload

    _, payload = write_payload(Clinging, tmp_path / "payloads")
    child_pid = tmp_path / "child.pid"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUPERVISOR,
        str(payload),
        str(child_pid),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        runner, template = (int(x) for x in line.split())
        assert parent_of(runner) == template
        await wait_until(
            lambda: child_pid.exists() and child_pid.read_text().strip(),
            what="the app's child process to start",
        )
        child = int(child_pid.read_text())
        assert alive(child)
        proc.kill()
        await proc.wait()
        await wait_until(
            lambda: not alive(runner) and not alive(child) and not alive(template),
            what="runner, its child and the template gone",
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        # Whatever a failure left behind: the runner's process group holds the app's child.
        if child_pid.exists() and alive(int(child_pid.read_text())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(int(child_pid.read_text())), signal.SIGKILL)


def marking_module(folder: Path, name: str, marks: Path) -> None:
    """A module that appends its name to ``marks`` each time it is imported."""
    (folder / f"{name}.py").write_text(
        f"with open({str(marks)!r}, 'a') as f:\n    f.write({name!r} + '\\n')\n"
    )


async def test_a_template_no_current_revision_wants_is_stopped(tmp_path: Path) -> None:
    """A redeploy whose runners need another environment moves the app to that template and
    stops the one its earlier revision used; one another app still wants stays."""
    pool = TemplatePool(tmp_path, start_timeout=120)
    env = dict(os.environ)
    try:
        pool.want("default/a", sys.executable, env | {"REVISION": "1"}, [], None)
        pool.want("default/b", sys.executable, env | {"REVISION": "b"}, [], None)
        await wait_until(lambda: len(pool.pids()) == 2, what="two templates")
        first = pool.pids()[templates.template_key(sys.executable, env | {"REVISION": "1"})]
        shared = pool.pids()[templates.template_key(sys.executable, env | {"REVISION": "b"})]
        pool.want("default/a", sys.executable, env | {"REVISION": "2"}, [], None)
        await wait_until(lambda: not alive(first), what="the first revision's template stopped")
        await wait_until(lambda: len(pool.pids()) == 2, what="the second revision's template")
        assert first not in pool.pids().values()
        # b moves to the template a uses now: b's old one goes, a's stays.
        pool.want("default/b", sys.executable, env | {"REVISION": "2"}, [], None)
        await wait_until(lambda: not alive(shared), what="b's old template stopped")
        (second,) = pool.pids().values()
        pool.drop_app("default/a")
        assert alive(second) and pool.pids() == {
            templates.template_key(sys.executable, env | {"REVISION": "2"}): second
        }
    finally:
        await pool.close()
    assert not alive(second)


async def test_a_restarted_template_preloads_only_the_current_revision(
    tmp_path: Path,
) -> None:
    """A template started again after it died imports what the app's current revision
    preloads, not every revision's since the first."""
    modules, marks = tmp_path / "modules", tmp_path / "marks"
    modules.mkdir()
    for name in ("first_preload", "second_preload"):
        marking_module(modules, name, marks)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(modules), *sys.path])}
    pool = TemplatePool(tmp_path, start_timeout=120)

    def lines() -> list[str]:
        return marks.read_text().split() if marks.exists() else []

    try:
        pool.want("default/a", sys.executable, env, ["first_preload"], None)
        await wait_until(lambda: pool.settled() and lines() == ["first_preload"], what="first")
        pool.want("default/a", sys.executable, env, ["second_preload"], None)
        await wait_until(lambda: pool.settled() and len(lines()) == 2, what="the second")
        (old,) = pool.pids().values()
        os.kill(old, signal.SIGKILL)
        await wait_until(
            lambda: (
                [p for p in pool.pids().values() if p != old]
                and pool.settled()
                and len(lines()) >= 3
            ),
            what="a new template with its preload done",
        )
        assert lines() == ["first_preload", "second_preload", "second_preload"]
    finally:
        await pool.close()
