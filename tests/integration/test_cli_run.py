"""``yurt run`` as a user runs it: a real process, real signals, no runner left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import runner_logs

pytestmark = pytest.mark.timeout(120)

APPS = Path(__file__).with_name("apps.py")
EXAMPLES = Path(__file__).parents[2] / "examples"


def yurt_run(target: str, port: int, data_dir: Path) -> list[str]:
    """The ``yurt run`` command line."""
    return [sys.executable, "-m", "yurt.cli", "run", target, "--port", str(port),
            "--data-dir", str(data_dir), "--log-format", "json"]  # fmt: skip


def start(target: str, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``yurt run`` the way a shell starts a background job (SIGINT ignored)."""
    proc = subprocess.Popen(
        yurt_run(target, 0, data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the URL is printed (or the process dies)
    match = re.search(r"at (http://\S+)", line)
    assert match, f"yurt run printed {line!r}"
    return proc, match.group(1)


def post(url: str, payload: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def runner_pids(base: str) -> list[int]:
    with urllib.request.urlopen(base + "/_yurt/apps", timeout=30) as resp:
        apps = json.loads(resp.read())
    return [r["pid"] for a in apps for r in a["runners"] if r["pid"]]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_runner(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C (even with SIGINT ignored by the shell) or SIGTERM: yurt run exits, no runner left."""
    proc, url = start(f"{EXAMPLES / 'echo.py'}::Echo", tmp_path)
    try:
        assert post(url, {"prompt": "hi"}) == {"text": "echo: hi"}
        base = url.rsplit("/", 2)[0]
        pids = runner_pids(base)
        assert len(pids) == 1 and alive(pids[0])
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def yurt_run_fails(target: str, port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``yurt run`` expecting it to stop on its own (an error), and return what it said."""
    return subprocess.run(
        yurt_run(target, port, data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_target_fails_with_message(tmp_path: Path) -> None:
    """A target naming a class that is not there fails at once, listing what is."""
    out = yurt_run_fails(f"{APPS}::Nope", 0, tmp_path)
    assert out.returncode == 1
    assert "no App class 'Nope'" in out.stderr and "Echo" in out.stderr


def test_busy_port_fails_with_message(tmp_path: Path) -> None:
    """A port already taken: a one-line error naming it, exit 1, no runner started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = yurt_run_fails(f"{EXAMPLES / 'echo.py'}::Echo", port, tmp_path)
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not runner_logs(tmp_path / "logs")


BROKEN_APP = (
    "import yurt\n\n\nclass Broken(yurt.App):\n    def setup(self) -> None:\n        x = (\n"
)


def test_syntax_error_is_one_line(tmp_path: Path) -> None:
    """A syntax error in the app file: one line naming file, line and error; no traceback."""
    app = tmp_path / "broken_app.py"
    app.write_text(BROKEN_APP)
    out = yurt_run_fails(f"{app}::Broken", 0, tmp_path / "data")
    assert out.returncode == 1
    assert out.stderr.startswith(f"yurt run: {app}:6: SyntaxError: ")
    assert out.stderr.count("\n") == 1
    assert out.stdout == ""


def test_import_error_with_debug_shows_the_traceback(tmp_path: Path) -> None:
    """--debug adds the traceback of an import error above its one line."""
    app = tmp_path / "missing_dep.py"
    app.write_text("import yurt\nimport yurt_sibling_not_installed_anywhere\n")
    out = subprocess.run(
        [*yurt_run(str(app), 0, tmp_path / "data"), "--debug"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"yurt run: {app}:2: ModuleNotFoundError: "
        "No module named 'yurt_sibling_not_installed_anywhere'"
    )
