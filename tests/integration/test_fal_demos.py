"""Public fal apps served by ``yurt run`` with only their imports changed.

Each ``fal_demo_*.py`` beside this file follows one public fal app (its header names the source):
the app's use of fal is kept as written there, with ``import fal`` changed to
``import yurt as fal`` and ``from fal.x import ...`` to ``from yurt.x import ...``; model weights
and the libraries that load them are replaced by small stand-ins. The tests start ``yurt run``
as a user would and call the apps with yurt's client, plain HTTP and fal's own client.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from test_gpu_fail_fast import A100, env_with_fake_nvml

import yurt

pytestmark = pytest.mark.timeout(240)

HERE = Path(__file__).parent
STOP_S = 60.0


@dataclass(frozen=True)
class Tls:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""

    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass(frozen=True)
class Served:
    """An app served by ``yurt run``: the router's base URL and the app's id."""

    base: str
    app_id: str

    @property
    def url(self) -> str:
        return f"{self.base}/{self.app_id}"

    @property
    def host(self) -> str:
        return self.base.split("://", 1)[1]


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1, written as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = Tls(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    ca.cert_pem.write_to_path(files.ca)
    files.cert.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(files.key)
    return files


@contextmanager
def yurt_run(
    ref: str,
    data_dir: Path,
    *options: str,
    tls: Tls | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """``yurt run fal_demo_x.py::Class`` until the block ends; yields where the app answers."""
    command = [sys.executable, "-m", "yurt.cli", "run", str(HERE / ref), "--port", "0",
               "--data-dir", str(data_dir), "--quiet", *options]  # fmt: skip
    if tls is not None:
        command += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()  # the URL line, or "" once the process has died
        match = re.search(r"at (https?://[^/\s]+)/(\S+)", line)
        if match is None:
            proc.wait(timeout=STOP_S)
            pytest.fail(f"yurt run {ref} printed {line!r}; stderr:\n{proc.stderr.read()[-3000:]}")
        yield Served(match.group(1), match.group(2).rstrip("/"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run_fal_client(served: Served, tls: Tls, script: str, *args: str) -> Any:
    """Run ``script`` (``python -c``) with fal-client pointed at ``served``; returns its JSON.

    fal-client reads its hosts from the environment at import and always speaks https, so it
    runs in a process of its own that trusts the test CA through ``SSL_CERT_FILE``.
    """
    env = {
        **os.environ,
        "FAL_RUN_HOST": served.host,
        "FAL_QUEUE_RUN_HOST": f"{served.host}/queue",
        "FAL_KEY": "key-id:key-secret",
        "SSL_CERT_FILE": str(tls.ca),
        "NO_PROXY": "*",
    }
    out = subprocess.run(
        [sys.executable, "-c", script, served.app_id, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- fal's docs: the basic endpoint ------------------------------------------------------------

FAL_RUN_AND_SUBMIT = r"""
import json, sys
import fal_client

app = sys.argv[1]
handle = fal_client.submit(app, {"prompt": "queued"})
print(json.dumps({"run": fal_client.run(app, {"prompt": "sync"}), "get": handle.get()}))
"""


def test_docs_basic_endpoint(tmp_path: Path, tls: Tls) -> None:
    """fal's docs' basic app (GPU-A100) answers yurt's client and fal-client, sync and queued."""
    env = env_with_fake_nvml(tmp_path, [A100])
    with yurt_run("fal_demo_quickstart.py::MyApp", tmp_path / "data", tls=tls, env=env) as app:
        assert app.app_id == "default/my-app"  # fal's name for MyApp
        with yurt.Client(app.base, ssl_context=tls.context()) as client:
            assert client.run(app.app_id, {"prompt": "abc"}) == {"text": "cba"}
            handle = client.submit(app.app_id, {"prompt": "queued"})
            assert handle.result() == {"text": "deueuq"}
            with pytest.raises(yurt.RequestFailed) as failed:
                client.run(app.app_id, {"text": "no prompt"})
            assert failed.value.status == 422
        out = run_fal_client(app, tls, FAL_RUN_AND_SUBMIT)
        assert out == {"run": {"text": "cnys"}, "get": {"text": "deueuq"}}
