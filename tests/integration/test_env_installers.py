"""pip and uv build an app's environment from the machine's pip configuration alone, and
`yurt run` shows the build's stages before it serves."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import env_apps
import pytest

from wheels import write_wheel
from yurt.envs_installer import find_uv

from support import DEADLINE, start_yurt, yurt_command

pytestmark = pytest.mark.timeout(240)

APPS = Path(env_apps.__file__)
STAGES = [
    r"yurt: environment [0-9a-f]{12}: creating the virtualenv \((pip|uv)\)",
    r"yurt: environment [0-9a-f]{12}: (resolving|installing)",
    r"yurt: environment [0-9a-f]{12}: installing 1 package, [\d.]+ s",
    r"yurt: environment [0-9a-f]{12}: ready in [\d.]+ s \(1 package installed with (pip|uv)\)",
]


def configured_only(pip_conf: Path) -> dict[str, str]:
    """This process's environment with pip's configuration in ``pip_conf`` alone: no PIP_*
    variable, and a PIP_CONFIG_FILE (which makes pip skip the user's own file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "NOMAD_"))}
    return {**env, "PIP_CONFIG_FILE": str(pip_conf)}


async def serve_and_ask(
    tmp_path: Path, target: str, config: str, env: dict[str, str] | None = None
) -> tuple[dict[str, object], str]:
    """`yurt run TARGET` until it answers one request; its reply and its console."""
    (tmp_path / "yurt.toml").write_text(config)
    args = ["run", target, "--port", "0", "--data-dir", str(tmp_path / "data")]
    log = tmp_path / "run.log"
    proc, url = await start_yurt(
        [*args, "--config", str(tmp_path / "yurt.toml")], log, r"at (http://\S+)", env
    )
    try:
        timeout = aiohttp.ClientTimeout(total=DEADLINE * 2)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.post(url, json={}) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, object] = await resp.json()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), DEADLINE)
    return body, log.read_text()


def assert_stages_before_serving(console: str) -> None:
    at = [re.search(stage, console) for stage in STAGES]
    assert all(at), console
    serving = console.index("yurt: serving")
    positions = [m.start() for m in at if m]
    assert positions == sorted(positions) and positions[-1] < serving, console


@pytest.mark.parametrize("installer", ["pip", "uv"])
async def test_the_machines_pip_configuration_is_where_packages_come_from(
    tmp_path: Path, installer: str
) -> None:
    """With only a pip.conf naming a wheel directory (no index), pip reads it and uv is told it:
    the app imports from its environment, and the console shows each stage before serving."""
    if installer == "uv" and find_uv(sys.executable) is None:
        pytest.skip("uv is not installed here (pip install uv, or yurt[test])")
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "yurt_test_pkg", "1.0", "VERSION = '1.0'\n")
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    body, console = await serve_and_ask(
        tmp_path,
        f"{APPS}::PinsOne",
        f'[envs]\ninstaller = "{installer}"\n',
        configured_only(pip_conf),
    )
    assert body["version"] == "1.0"
    assert str(body["python"]).startswith(str(tmp_path / "data" / "envs"))
    assert_stages_before_serving(console)
    assert f"installed with {installer})" in console


def humanize_reachable(tmp_path: Path) -> bool:
    """pip, as this machine configures it, can fetch humanize."""
    pip = [sys.executable, "-m", "pip"]
    done = subprocess.run(
        [*pip, "download", "--no-deps", "-q", "-d", str(tmp_path), "humanize>=4"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0


async def test_humanize_answers_on_the_first_yurt_run(tmp_path: Path) -> None:
    """An app needing humanize, never installed beside yurt, answers from it on its first
    `yurt run`, from the index this machine's pip configuration names, its build shown."""
    assert importlib.util.find_spec("humanize") is None
    if not humanize_reachable(tmp_path / "probe"):
        pytest.skip("humanize is not reachable from this machine's pip index")
    body, console = await serve_and_ask(tmp_path, f"{APPS}::Humanize", "")
    assert body["text"] == "1.0 MB"
    assert str(body["python"]).startswith(str(tmp_path / "data" / "envs"))
    assert_stages_before_serving(console)


async def test_a_second_yurt_run_reuses_the_environment(tmp_path: Path) -> None:
    """The same app again: no build, a line saying the environment was built before."""
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "yurt_test_pkg", "1.0", "VERSION = '1.0'\n")
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    env = configured_only(pip_conf)
    target = f"{APPS}::PinsOne"
    first, _ = await serve_and_ask(tmp_path, target, "", env)
    second, console = await serve_and_ask(tmp_path, target, "", env)
    assert first["python"] == second["python"]
    assert re.search(r"yurt: environment [0-9a-f]{12}: ready \(built before\)", console), console
    assert "creating the virtualenv" not in console


async def test_yurt_deploy_shows_the_servers_build_and_a_failure(tmp_path: Path) -> None:
    """`yurt deploy` to a `yurt server` follows the server's build of the environment stage by
    stage; the app then answers from it; deployed again, it says the environment was built
    before. A requirement that does not install fails the deploy command with pip's words."""
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "yurt_test_pkg", "1.0", "VERSION = '1.0'\n")
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    args = ["server", "--port", "0", "--data-dir", str(tmp_path / "data")]
    proc, base = await start_yurt(
        args, tmp_path / "server.log", r"server at (http://\S+)", configured_only(pip_conf)
    )
    try:
        code, out, err = await yurt_command("deploy", f"{APPS}::PinsOne", "--server", base)
        assert code == 0, err
        stages = [re.search(stage, out) for stage in STAGES]
        assert all(stages), out
        assert out.index("installed with pip") < out.index("try: curl"), out
        url = re.findall(r"try: curl -s -X POST (\S+)", out)[0]
        timeout = aiohttp.ClientTimeout(total=DEADLINE * 2)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.post(url, json={}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["version"] == "1.0"
            api = f"{base}/_yurt/api/v1/apps"
            async with s.get(f"{api}/{url.split('/', 3)[3]}/environment?after=x") as resp:
                assert (resp.status, (await resp.json())["error_type"]) == (422, "bad_request")
            async with s.get(f"{api}/nobody/nothing/environment") as resp:
                assert (resp.status, (await resp.json())["error_type"]) == (404, "app_not_found")

        code, out, err = await yurt_command("deploy", f"{APPS}::PinsOne", "--server", base)
        assert code == 0, err
        assert re.search(r"environment [0-9a-f]{12}: ready \(built before\)", out), out
        assert "creating the virtualenv" not in out, out

        code, out, err = await yurt_command("deploy", f"{APPS}::PinsMissing", "--server", base)
        assert code == 1, out
        assert re.search(r"environment [0-9a-f]{12}: failed after", out), out
        assert "is deployed, but its environment did not build" in err, err
        assert "No matching distribution found for yurt_test_pkg==9.0" in err, err
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), DEADLINE)


async def test_a_signal_during_yurt_runs_build_stops_it_at_once(tmp_path: Path) -> None:
    """SIGTERM while `yurt run` builds (an index that never answers): the installer is killed,
    `yurt run` exits 0 without serving, and no environment nor failure is left."""
    silent = socket.socket()  # an index that accepts and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nindex-url = http://127.0.0.1:{silent.getsockname()[1]}/\n")
    log = tmp_path / "run.log"
    args = ["run", f"{APPS}::PinsOne", "--port", "0", "--data-dir", str(tmp_path / "data")]
    try:
        proc, _ = await start_yurt(
            args, log, r"(environment \S+: resolving)", configured_only(pip_conf)
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0, log.read_text()
    finally:
        silent.close()
    assert "yurt: serving" not in log.read_text()
    left = [p.name for p in (tmp_path / "data" / "envs").iterdir()]
    assert [name for name in left if not name.endswith(".lock")] == [], left
    assert naming(str(tmp_path / "data")) == []  # the installer went with it


def naming(text: str) -> list[int]:
    """The processes whose command line names ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


async def test_a_build_that_fails_ends_yurt_run_with_pips_words(tmp_path: Path) -> None:
    """`yurt run` of an app whose requirement does not install exits 1, before serving, quoting
    pip; the failure is remembered for the next start."""
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "yurt_test_pkg", "1.0", "VERSION = '1.0'\n")
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    data = tmp_path / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "yurt.cli", "run", f"{APPS}::PinsMissing", "--port", "0",
        "--data-dir", str(data), cwd=Path(__file__).parents[2], env=configured_only(pip_conf),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE * 2)
    assert proc.returncode == 1, (out, err)
    assert b"yurt: serving" not in out
    assert re.search(rb"environment [0-9a-f]{12}: failed after", out), out
    assert b"No matching distribution found for yurt_test_pkg==9.0" in err, err
    assert [p.name for p in (data / "envs").glob("*.failed")] != []
