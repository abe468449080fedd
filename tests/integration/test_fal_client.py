"""fal's own Python client against ``yurt run`` over https, as a fal user would point it at yurt.

fal-client reads its hosts from the environment when it is imported and always speaks https,
so it runs in a subprocess of its own, trusting a throwaway CA through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

pytestmark = pytest.mark.timeout(240)

APPS = Path(__file__).with_name("client_apps.py")

# Run as ``python -c SCRIPT APP_ID GATE_FILE YURT_URL``; prints one JSON object.
SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path

import fal_client
import yurt

app, gate, url = sys.argv[1:4]
out = {}

def failure(call):
    try:
        call()
    except fal_client.FalClientHTTPError as exc:
        return {"status": exc.status_code, "error_type": exc.error_type, "detail": exc.message}
    return None

def status(s):
    return {"type": type(s).__name__, **vars(s)}

out["run"] = fal_client.run(app, {"prompt": "sync"})
out["run_failed"] = failure(lambda: fal_client.run(app, {"prompt": "tea"}, path="teapot"))

handle = fal_client.submit(app, {"prompt": "queued"}, priority="low", hint="h", start_timeout=60)
out["get"] = handle.get()
out["status"] = status(handle.status(with_logs=True))
out["status_by_id"] = status(fal_client.status(app, handle.request_id, with_logs=True))
out["result_by_id"] = fal_client.result(app, handle.request_id)

updates = []
out["subscribe"] = fal_client.subscribe(
    app, {"prompt": "sub"}, with_logs=True, on_queue_update=lambda s: updates.append(status(s))
)
out["updates"] = updates

first = fal_client.submit(f"{app}/hold", {"release": gate})
for event in first.iter_events():
    if isinstance(event, fal_client.InProgress):
        break
second = fal_client.submit(app, {"prompt": "never"})
out["queued"] = status(second.status())
second.cancel()
out["cancelled"] = status(second.status())
out["cancelled_get"] = failure(second.get)
out["cancel_again"] = failure(second.cancel)
Path(gate).touch()
out["released"] = first.get()

teapot = fal_client.submit(app, {"prompt": "coffee"}, path="teapot")
out["teapot_get"] = failure(teapot.get)
out["teapot_status"] = status(teapot.status())

async def run_async():
    handle = await fal_client.submit_async(app, {"prompt": "async"})
    return await handle.get()
out["async_get"] = asyncio.run(run_async())

# yurt's own client, trusting the CA through SSL_CERT_FILE alone.
with yurt.Client(url) as client:
    out["yurt_result"] = client.submit(app, {"prompt": "yurt"}).result()

async def run_yurt_async():
    async with yurt.AsyncClient(url) as client:
        return await client.run(app, {"prompt": "yurt async"})
out["yurt_async_run"] = asyncio.run(run_yurt_async())

print(json.dumps(out))
"""


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert chain, key) files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(files[0])
    files[1].write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(files[2])
    return files


@pytest.fixture
def yurt_https(tmp_path: Path, tls: tuple[Path, Path, Path]) -> Iterator[str]:
    """``yurt run client_apps.py::Gated`` serving https; yields the app's URL; stops it after."""
    _, cert, key = tls
    command = [sys.executable, "-m", "yurt.cli", "run", f"{APPS}::Gated", "--port", "0",
               "--tls-cert", str(cert), "--tls-key", str(key),
               "--data-dir", str(tmp_path / "data"), "--log-format", "json"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the URL is printed (or the process dies)
        match = re.search(r"at (https://\S+)", line)
        assert match, f"yurt run printed {line!r}"
        yield match.group(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def run_fal_script(url: str, ca: Path, gate: Path) -> dict[str, Any]:
    """Run SCRIPT with fal-client pointed at the router; returns what it printed."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    app_id = url.split(host, 1)[1].strip("/")
    env = {
        **os.environ,
        "FAL_RUN_HOST": host,
        "FAL_QUEUE_RUN_HOST": f"{host}/queue",
        "FAL_KEY": "key-id:key-secret",
        "SSL_CERT_FILE": str(ca),
        "NO_PROXY": "*",
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, app_id, str(gate), url.removesuffix("/" + app_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_fal_client_speaks_to_yurt(
    yurt_https: str, tls: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """fal-client's run, submit/get, status, subscribe, cancel and async calls work unchanged."""
    gate = tmp_path / "gate"
    try:
        out = run_fal_script(yurt_https, tls[0], gate)
    finally:
        gate.touch()  # let a held request go, whatever happened
    assert out["run"] == {"text": "echo: sync"}
    assert out["run_failed"] == {"status": 418, "error_type": "teapot", "detail": "no tea here"}
    assert out["get"] == out["result_by_id"] == {"text": "echo: queued"}
    for key in ("status", "status_by_id"):
        status = out[key]
        assert status["type"] == "Completed" and status["error"] is None
        assert "inference_time" in status["metrics"]
        messages = [entry["message"] for entry in status["logs"]]
        assert messages == ["generating for queued"]
        assert set(status["logs"][0]) >= {"timestamp", "level", "source", "message"}
    assert out["subscribe"] == {"text": "echo: sub"}
    assert out["updates"][-1]["type"] == "Completed"
    assert out["queued"] == {"type": "Queued", "position": 0}
    cancelled = out["cancelled"]
    assert cancelled["type"] == "Completed" and cancelled["error_type"] == "client_cancelled"
    assert out["cancelled_get"]["status"] == 499
    assert out["cancelled_get"]["error_type"] == "client_cancelled"
    assert out["cancel_again"]["status"] == 400  # ALREADY_COMPLETED
    assert out["released"] == {"text": "released"}
    assert out["teapot_get"] == {"status": 418, "error_type": "teapot", "detail": "no coffee here"}
    assert out["teapot_status"]["error_type"] == "teapot"
    assert out["async_get"] == {"text": "echo: async"}
    assert out["yurt_result"] == {"text": "echo: yurt"}
    assert out["yurt_async_run"] == {"text": "echo: yurt async"}


# Run as ``python -c KEYED APP_ID``, FAL_KEY in the environment; prints one JSON object.
KEYED = r"""
import json, sys
import fal_client

app = sys.argv[1]
out = {}
try:
    out["run"] = fal_client.run(app, {"prompt": "keyed"})
    handle = fal_client.submit(app, {"prompt": "queued"})
    out["get"] = handle.get()
except fal_client.FalClientHTTPError as exc:
    out["failed"] = {"status": exc.status_code, "error_type": exc.error_type}
print(json.dumps(out))
"""


def fal_with_key(url: str, ca: Path, key: str) -> dict[str, Any]:
    """Run KEYED with ``FAL_KEY=key`` against the app at ``url``."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    env = {
        **os.environ,
        "FAL_RUN_HOST": host,
        "FAL_QUEUE_RUN_HOST": f"{host}/queue",
        "FAL_KEY": key,
        "SSL_CERT_FILE": str(ca),
        "NO_PROXY": "*",
    }
    app_id = url.split(host, 1)[1].strip("/")
    out = subprocess.run(
        [sys.executable, "-c", KEYED, app_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_fal_key_reaches_a_private_app_until_revoked(
    tmp_path: Path, tls: tuple[Path, Path, Path]
) -> None:
    """FAL_KEY set to a key from `yurt keys create` runs and queues on a private app over
    https; a wrong key gets 401; once revoked (`yurt keys revoke`) the key gets 401 within the
    stated second (waited for generously)."""
    ca, cert, key_pem = tls
    data = tmp_path / "data"
    keys = [sys.executable, "-m", "yurt.cli", "keys"]
    made = subprocess.run(
        [*keys, "create", "--data-dir", str(data)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    apps = Path(__file__).with_name("access_apps.py")
    command = [sys.executable, "-m", "yurt.cli", "run", f"{apps}::Private", "--port", "0",
               "--tls-cert", str(cert), "--tls-key", str(key_pem),
               "--data-dir", str(data), "--log-format", "json"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"at (https://\S+)", line)
        assert match, f"yurt run printed {line!r}"
        url = match.group(1)
        assert fal_with_key(url, ca, key) == {
            "run": {"text": "private: keyed"},
            "get": {"text": "private: queued"},
        }
        wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
        unauthorized = {"failed": {"status": 401, "error_type": "unauthorized"}}
        assert fal_with_key(url, ca, wrong) == unauthorized
        revoked = subprocess.run(
            [*keys, "revoke", key.partition(":")[0], "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 60
        while (out := fal_with_key(url, ca, key)) != unauthorized:
            assert time.monotonic() < deadline, out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
