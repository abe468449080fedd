"""fal's own client opening a realtime session with ``yurt run`` over TLS.

fal-client reads its hosts from the environment at import and speaks only wss, so it runs in a
subprocess of its own that trusts a throwaway CA through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

pytestmark = pytest.mark.timeout(240)

APPS = Path(__file__).with_name("realtime_apps.py")

# ``python -c SCRIPT APP_ID ROUTER_URL``: fal-client's realtime and ws_connect with the key on
# the socket (use_jwt=False), then with a token fetched from the router's /tokens/ (fal's
# default, its REST_URL pointed at yurt), then yurt's own client over wss.
SCRIPT = r"""
import json, os, sys
import fal_client
import fal_client.client
import yurt

app, url = sys.argv[1:3]
out = {}
with fal_client.realtime(app, use_jwt=False, max_buffering=4) as rt:
    rt.send({"prompt": "fal", "image": b"xyz"})
    got = rt.recv()
    out["unary"] = {"text": got["text"], "image": got["image"].decode()}
with fal_client.realtime(app, use_jwt=False, path="/broken") as rt:
    rt.send({"prompt": "fal"})
    try:
        rt.recv()
    except fal_client.client.RealtimeError as exc:
        out["error"] = [exc.error, exc.reason]
with fal_client.ws_connect(app, use_jwt=False, path="/ws") as ws:
    ws.send("hi")
    out["ws"] = ws.recv()
fal_client.client.REST_URL = url  # the one line that points fal's token requests at yurt
with fal_client.realtime(app) as rt:
    rt.send({"prompt": "jwt", "image": b"ab"})
    out["jwt"] = rt.recv()["text"]
key = os.environ["FAL_KEY"]
with yurt.Client(url, key=key) as client, client.connect(app) as rt:  # CA via SSL_CERT_FILE
    rt.send({"prompt": "yurt"})
    out["yurt"] = rt.recv()["text"]
print(json.dumps(out))
"""


@pytest.fixture
def yurt_https(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """``yurt run realtime_apps.py::Live`` over https with API keys on (the app is private):
    (the app's URL, the CA file, a key)."""
    made = subprocess.run(
        [sys.executable, "-m", "yurt.cli", "keys", "create", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(ca_file)
    chain.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(key)
    command = [sys.executable, "-m", "yurt.cli", "run", f"{APPS}::Live", "--port", "0",
               "--tls-cert", str(chain), "--tls-key", str(key),
               "--data-dir", str(tmp_path / "data"), "--log-format", "json"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the URL is printed (or the process dies)
        match = re.search(r"at (https://\S+)", line)
        assert match, f"yurt run printed {line!r}"
        yield match.group(1), ca_file, made.stdout.strip()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_fal_client_realtime_reaches_a_yurt_app(yurt_https: tuple[str, Path, str]) -> None:
    """With FAL_KEY set to a key of the server: fal_client.realtime(use_jwt=False) gets
    outputs and the endpoint's error from yurt; fal_client.ws_connect reaches a plain websocket
    endpoint of the same app; fal_client.realtime with its default token (REST_URL pointed at
    yurt) gets its output; yurt's own client connects over wss with the CA from
    SSL_CERT_FILE."""
    url, ca, key = yurt_https
    host = url.split("://", 1)[1].split("/", 1)[0]
    app_id = url.split(host, 1)[1].strip("/")
    env = {
        **os.environ,
        "FAL_RUN_HOST": host,
        "FAL_KEY": key,
        "SSL_CERT_FILE": str(ca),
        "NO_PROXY": "*",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, app_id, url.removesuffix("/" + app_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["unary"] == {"text": "drawn: fal", "image": "zyx"}
    assert out["error"] == ["INTERNAL_ERROR", "RuntimeError: cannot draw fal"]
    assert out["ws"] == "echo: hi"
    assert out["jwt"] == "drawn: jwt"
    assert out["yurt"] == "drawn: yurt"
