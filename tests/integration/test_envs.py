"""Environments from ``requirements``: built once per digest from a local wheel directory
(offline), runners started from them, failures reported once and not retried in a loop."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import env_apps
import pytest
import structlog

from wheels import write_wheel
from yurt.config import EnvsConfig
from yurt.envs import Environments
from yurt.errors import EnvironmentBuildError
from yurt.platform import Platform

from support import DEADLINE, ROOT, fast_config, start_yurt, wait_until

pytestmark = pytest.mark.timeout(180)

APPS = Path(env_apps.__file__)


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """A find-links directory with yurt_test_pkg 1.0 and 2.0 (and nothing else)."""
    folder = tmp_path / "wheels"
    for version in ("1.0", "2.0"):
        write_wheel(folder, "yurt_test_pkg", version, f"VERSION = {version!r}\n")
    return folder


def offline(wheels: Path) -> EnvsConfig:
    """pip told to install only from ``wheels``."""
    return EnvsConfig(pip_args=("--no-index", "--find-links", str(wheels)))


@asynccontextmanager
async def platform(data_dir: Path, wheels: Path) -> AsyncIterator[Platform]:
    config = fast_config(data_dir).model_copy(update={"envs": offline(wheels)})
    p = Platform(config)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def ask(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.post(url, json={}) as resp:
        body: dict[str, object] = await resp.json(content_type=None)
        return resp.status, body


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE * 2))


def events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == name]


async def test_yurt_run_serves_a_package_only_the_apps_environment_has(
    tmp_path: Path, wheels: Path
) -> None:
    """`yurt run` builds the app's environment (private, in the data dir), shows its stages, and
    the app imports from it."""
    assert importlib.util.find_spec("yurt_test_pkg") is None  # not beside yurt
    config = tmp_path / "yurt.toml"
    config.write_text(
        f"[envs]\npip_args = {json.dumps(['--no-index', '--find-links', str(wheels)])}\n"
    )
    data = tmp_path / "data"
    args = ["run", f"{APPS}::PinsOne", "--port", "0", "--data-dir", str(data)]
    proc, url = await start_yurt(
        [*args, "--config", str(config)], tmp_path / "run.log", r"at (http://\S+)"
    )
    try:
        async with session() as s:
            status, body = await ask(s, url)
        assert status == 200, body
        assert body["version"] == "1.0"
        assert str(body["python"]).startswith(str(data / "envs"))
        console = (tmp_path / "run.log").read_text()
        for stage in ("env_build_started", "installing 1 package", "env_ready"):
            assert stage in console, console
        # The environment is in the data dir: nothing in it is for the group or others.
        shared = [
            str(p)
            for p in [data, *data.rglob("*")]
            if not p.is_symlink() and p.stat().st_mode & 0o077
        ]
        assert shared == [], shared[:5]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), DEADLINE)


async def test_two_apps_pinning_different_versions_each_see_their_own(
    tmp_path: Path, wheels: Path
) -> None:
    """One router serves apps pinning yurt_test_pkg 1.0 and 2.0 side by side, each its own."""
    async with platform(tmp_path, wheels) as p, session() as s:
        one = await p.add_app(env_apps.PinsOne)
        two = await p.add_app(env_apps.PinsTwo)
        steps = await p.add_app(env_apps.PinsTwoInSteps)
        replies = [await ask(s, f"{p.url}/{app}") for app in (one, two, steps)]
    assert [status for status, _ in replies] == [200, 200, 200], replies
    assert [body["version"] for _, body in replies] == ["1.0", "2.0", "2.0"]
    assert len({body["python"] for _, body in replies}) == 3


async def test_a_failing_requirement_fails_the_start_once_and_leaves_nothing(
    tmp_path: Path, wheels: Path
) -> None:
    """A requirement that does not install: 503 quoting pip, no rebuild on the next start, no
    half-built environment; `yurt env rebuild` lets it build again."""
    async with platform(tmp_path, wheels) as p, session() as s:
        app = await p.add_app(env_apps.PinsMissing)
        with structlog.testing.capture_logs() as logs:
            first = await ask(s, f"{p.url}/{app}")
            second = await ask(s, f"{p.url}/{app}")
        for status, body in (first, second):
            assert status == 503, body
            assert body["error_type"] == "runner_scheduling_failure"
            assert "No matching distribution found for yurt_test_pkg==9.0" in str(body["detail"])
            assert str(tmp_path) not in str(body["detail"])
        assert len(events(logs, "env_build_started")) == 1
        assert len(events(logs, "runner_start_failed")) >= 2
        assert [x for x in (tmp_path / "envs").iterdir() if x.is_dir()] == []

        write_wheel(wheels, "yurt_test_pkg", "9.0", "VERSION = '9.0'\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "yurt.cli", "env", "rebuild", "--failed",
            "--data-dir", str(tmp_path), cwd=ROOT,
        )  # fmt: skip
        assert await proc.wait() == 0

        async def answers() -> bool:
            status, body = await ask(s, f"{p.url}/{app}")
            return status == 200 and body["version"] == "9.0"

        await wait_until(answers, timeout=DEADLINE * 2, what="the rebuilt environment")


async def test_two_runners_of_a_new_environment_build_it_once(tmp_path: Path, wheels: Path) -> None:
    """Two runners starting together on a new environment: one builds, the other waits."""
    with structlog.testing.capture_logs() as logs:
        async with platform(tmp_path, wheels) as p:
            app = await p.add_app(env_apps.TwoRunners)
            await wait_until(
                lambda: len(p.registry.healthy(app)) == 2, timeout=DEADLINE * 2, what="2 runners"
            )
    assert len(events(logs, "env_build_started")) == 1
    assert len(events(logs, "runner_ready")) >= 2


BUILD = """
import sys
import time
from pathlib import Path
from yurt.config import EnvsConfig
from yurt.envs import Environments
root, wheels = Path(sys.argv[1]), sys.argv[2]
envs = Environments(root, EnvsConfig(pip_args=("--no-index", "--find-links", wheels)))
print(envs.ensure([["yurt_test_pkg==2.0"]]))
"""


async def test_two_processes_needing_one_environment_build_it_once(
    tmp_path: Path, wheels: Path
) -> None:
    """Two processes (two `yurt run`s) asking for one new environment: one builds, one waits."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BUILD,
            str(tmp_path / "envs"),
            str(wheels),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [(await asyncio.wait_for(p.communicate(), DEADLINE * 2))[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    joined = "".join(outs)
    assert joined.count("env_build_started") == 1, joined
    assert outs[0].splitlines()[-1] == outs[1].splitlines()[-1]


def test_an_app_pinning_a_package_yurt_needs_is_a_clear_build_error(
    tmp_path: Path, wheels: Path
) -> None:
    """An app pinning pydantic 1: the build fails naming the app's version and yurt's."""
    write_wheel(wheels, "pydantic", "1.0", "VERSION = '1.0'\n")
    envs = Environments(tmp_path / "envs", offline(wheels))
    with pytest.raises(EnvironmentBuildError) as failed:
        envs.ensure([["pydantic==1.0"]])
    message = str(failed.value)
    assert "the app installs pydantic 1.0 where yurt runs pydantic 2." in message
    assert "yurt requires pydantic>=" in message
    assert [x for x in (tmp_path / "envs").iterdir() if x.is_dir()] == []


async def test_stopping_during_a_build_stops_the_installer_and_records_nothing(
    tmp_path: Path, wheels: Path
) -> None:
    """A server stopped mid-build ends at once: pip is killed, no environment, no failure kept."""
    silent = socket.socket()  # an index that accepts and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    envs = EnvsConfig(pip_args=("--index-url", f"http://127.0.0.1:{silent.getsockname()[1]}/"))
    config = fast_config(tmp_path).model_copy(update={"envs": envs})
    p = Platform(config)
    await p.start()
    try:
        app = await p.add_app(env_apps.PinsOne)
        await p.backend.set_target(app, 1)
        progress = tmp_path / "envs"
        await wait_until(
            lambda: (
                '"stage":"resolving"' in "".join(f.read_text() for f in progress.glob("*.progress"))
            ),
            what="the install to start",
        )
    finally:
        started = time.monotonic()
        await asyncio.wait_for(p.stop(), DEADLINE)
        silent.close()
    assert time.monotonic() - started < 20
    left = [x.name for x in (tmp_path / "envs").iterdir() if not x.name.endswith(".lock")]
    assert left == []
