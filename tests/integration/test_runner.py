"""The runner process on its own: health during setup, limits, drain on SIGTERM, isolation."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from yurt.backends.localproc import bound_socket
from yurt.packaging import MAGIC, write_payload

from apps import Draining, Echo, Multiplexed, Spawner
from support import wait_until

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def runner(
    cls: type, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start ``python -m yurt.runner`` for ``cls``; kill it on exit if still running."""
    _, payload = write_payload(cls, tmp_path / "payloads")
    # An inherited socket, not a port chosen and then freed: tests run in parallel.
    sock = bound_socket("127.0.0.1")
    port = sock.getsockname()[1]
    with sock:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "yurt.runner", "--payload", str(payload),
            "--port", str(port), "--fd", str(sock.fileno()),
            pass_fds=(sock.fileno(),),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def status_of(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return None


async def test_sigterm_drains_in_flight_requests_then_tears_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM: in-flight requests finish, new connections are refused, teardown runs, exit 0."""
    marker = tmp_path / "teardown"
    monkeypatch.setenv("YURT_TEST_TEARDOWN", str(marker))
    async with runner(Draining, tmp_path) as (proc, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: status_of(s, url + "/_yurt/health"), what="health")
        await wait_until(lambda: _is(status_of(s, url + "/_yurt/health"), 200), what="runner ready")
        slow = asyncio.ensure_future(s.post(url + "/", json={"seconds": 4.0}))
        await wait_until(lambda: in_flight(s, url), what="request in flight")
        proc.send_signal(signal.SIGTERM)
        # While the request still runs, the port no longer takes new connections.
        await wait_until(lambda: _refused(url), what="new connections refused")
        assert not slow.done()
        resp = await slow
        assert resp.status == 200
        assert await resp.json() == {"text": "finished"}
        assert await proc.wait() == 0
        assert marker.read_text() == "torn down"
        with pytest.raises(aiohttp.ClientError):
            await s.get(url + "/_yurt/health")


async def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: the connection reached the backlog just as the listener closed.
        return True
    writer.close()
    return False


async def _is(coro: object, value: int) -> bool:
    return await coro == value  # type: ignore[misc]


async def in_flight(s: aiohttp.ClientSession, url: str) -> bool:
    async with s.get(url + "/_yurt/info") as resp:
        return bool((await resp.json())["in_flight"])


async def test_health_is_503_until_setup_finished(tmp_path: Path) -> None:
    """The port opens before setup(); health answers 503 until setup() returns, then 200."""
    module = tmp_path / "slowsetup.py"
    module.write_text(
        textwrap.dedent("""
        import time, yurt
        class Slow(yurt.App):
            def setup(self):
                time.sleep(1.0)
            @yurt.endpoint("/")
            def ok(self) -> dict:
                return {"ok": True}
    """)
    )
    from yurt.loader import load_app

    cls = load_app(f"{module}::Slow")
    async with runner(cls, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        first = await wait_until(lambda: status_of(s, url + "/_yurt/health"), what="port open")
        assert first == 503
        async with s.post(url + "/") as resp:
            assert resp.status == 503
        await wait_until(lambda: _is(status_of(s, url + "/_yurt/health"), 200), what="ready")
        async with s.post(url + "/") as resp:
            assert await resp.json() == {"ok": True}


async def test_a_health_check_asked_to_wait_answers_as_setup_ends(tmp_path: Path) -> None:
    """``/_yurt/health?wait=S`` on a starting runner holds its answer until setup() returns,
    then answers 200 (the local backend's startup poll); a bad ``wait`` answers at once."""
    gate = tmp_path / "gate"
    module = tmp_path / "gatedsetup.py"
    module.write_text(
        textwrap.dedent(f"""
        import os, time, yurt
        class Gated(yurt.App):
            def setup(self):
                while not os.path.exists({str(gate)!r}):
                    time.sleep(0.01)
            @yurt.endpoint("/")
            def ok(self) -> dict:
                return {{"ok": True}}
    """)
    )
    from yurt.loader import load_app

    cls = load_app(f"{module}::Gated")
    async with runner(cls, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        first = await wait_until(lambda: status_of(s, url + "/_yurt/health"), what="port open")
        assert first == 503
        assert await status_of(s, url + "/_yurt/health?wait=nan") == 503
        held = asyncio.ensure_future(status_of(s, url + "/_yurt/health?wait=5"))
        done, _ = await asyncio.wait([held], timeout=0.3)
        assert not done  # held while setup() runs
        gate.touch()
        assert await asyncio.wait_for(held, 30) == 200


async def test_excess_requests_get_429(tmp_path: Path) -> None:
    """More concurrent requests than max_multiplexing: the excess gets 429 at once."""
    async with runner(Multiplexed, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: _is(status_of(s, url + "/_yurt/health"), 200), what="ready")
        replies = await asyncio.gather(
            *(s.post(url + "/", json={"seconds": 1.0}) for _ in range(5))
        )
        statuses = sorted(r.status for r in replies)
        assert statuses == [200, 200, 200, 429, 429]


async def test_health_answers_while_sync_endpoint_computes(tmp_path: Path) -> None:
    """A sync endpoint runs off the event loop: health stays answered during it."""
    async with runner(Multiplexed, tmp_path) as (_, url), aiohttp.ClientSession() as s:
        await wait_until(lambda: _is(status_of(s, url + "/_yurt/health"), 200), what="ready")
        busy = asyncio.ensure_future(s.post(url + "/", json={"seconds": 6.0}))
        await wait_until(lambda: in_flight(s, url), what="request in flight")
        # Well inside the 6 s the endpoint computes: a blocked loop could not answer in time.
        async with s.get(url + "/_yurt/health", timeout=aiohttp.ClientTimeout(total=3.0)) as r:
            assert r.status == 200
        assert (await busy).status == 200


def run_to_exit(payload: Path) -> subprocess.CompletedProcess[str]:
    """Run a runner expected to end on its own, and return what it said."""
    return subprocess.run(
        [sys.executable, "-m", "yurt.runner", "--payload", str(payload), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_setup_failure_exits_with_reason(tmp_path: Path) -> None:
    """A failing setup() ends the runner with exit code 4 and a last line naming the error."""
    from apps import FailingSetup

    _, payload = write_payload(FailingSetup, tmp_path)
    proc = run_to_exit(payload)
    assert proc.returncode == 4
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("yurt-runner-failure: setup: setup() raised RuntimeError")


def test_payload_from_other_python_is_refused(tmp_path: Path) -> None:
    """A payload built by another Python minor version is refused with a message saying so."""
    _, payload = write_payload(Echo, tmp_path)
    data = payload.read_bytes()
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC) : end])
    header["python"] = "3.99"
    forged = tmp_path / "forged.yurt"
    forged.write_bytes(MAGIC + json.dumps(header).encode() + data[end:])
    proc = run_to_exit(forged)
    assert proc.returncode == 3
    assert "built with Python 3.99" in proc.stderr
    assert f"runs Python {sys.version_info.major}.{sys.version_info.minor}" in proc.stderr


def test_runner_imports_no_control_plane(tmp_path: Path) -> None:
    """Loading a payload and building the runner's server imports no control-plane module."""
    _, payload = write_payload(Echo, tmp_path)
    code = textwrap.dedent(f"""
        import sys
        import yurt.runner.__main__
        from yurt.packaging import unpack
        from yurt.runner.server import RunnerServer
        header, cls = unpack(open({str(payload)!r}, "rb").read())
        RunnerServer(header, cls, host="127.0.0.1", port=0)
        bad = ("yurt.router", "yurt.scheduler", "yurt.backends", "yurt.discovery",
               "yurt.platform", "yurt.embed", "yurt.cli", "nomad", "consul", "httptools")
        print(sorted(m for m in sys.modules if m.startswith(bad)))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def _gone(pid: int) -> bool:
    """Exited (a zombie left for a non-reaping init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


async def test_an_orphaned_runner_takes_what_the_app_started_with_it(tmp_path: Path) -> None:
    """A supervisor killed with SIGKILL cleans up nothing: the runner, in its own session,
    ends itself and the processes its app started (which may hold GPUs)."""
    _, payload = write_payload(Spawner, tmp_path / "payloads")
    child_pid = tmp_path / "child.pid"
    supervisor = textwrap.dedent(f"""
        import os, socket, subprocess, sys, time
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        runner = subprocess.Popen(
            [sys.executable, "-m", "yurt.runner", "--payload", {str(payload)!r},
             "--port", str(sock.getsockname()[1]), "--fd", str(sock.fileno()),
             "--parent-pid", str(os.getpid())],
            pass_fds=(sock.fileno(),),
            start_new_session=True,
            env={{**os.environ, "YURT_TEST_CHILD_PID": {str(child_pid)!r}}},
        )
        print(runner.pid, flush=True)
        time.sleep(1000)
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", supervisor, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        runner_pid = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        await wait_until(
            lambda: child_pid.exists() and child_pid.read_text().strip(),
            what="the app's child process to start",
        )
        child = int(child_pid.read_text())
        assert not _gone(child)
        proc.kill()
        await proc.wait()
        await wait_until(lambda: _gone(runner_pid) and _gone(child), what="runner and child gone")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_runner_listens_on_the_socket_it_inherits(tmp_path: Path) -> None:
    """--fd: the runner serves on a socket its supervisor bound, so no one can take the port
    between the supervisor's choice and the runner's listen."""
    _, payload = write_payload(Echo, tmp_path / "payloads")
    sock = bound_socket("127.0.0.1")
    port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "yurt.runner", "--payload", str(payload),
        "--port", str(port), "--fd", str(sock.fileno()),
        pass_fds=(sock.fileno(),),
    )  # fmt: skip
    sock.close()  # the runner holds its own copy
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                return await status_of(session, f"http://127.0.0.1:{port}/_yurt/health") == 200

            await wait_until(ready, what="the runner to answer on the inherited socket")
    finally:
        proc.terminate()
        await proc.wait()
