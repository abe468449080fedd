"""fal's own ``fal_client.stream`` reads a streamed endpoint through the router, over https.

fal-client POSTs to ``https://$FAL_RUN_HOST/{app}/stream`` and reads server-sent events (its
``stream`` in fal_client/client.py, through httpx-sse): the sync route, relayed chunk by chunk.
It reads its hosts at import and speaks only https, so it runs in a subprocess trusting a
throwaway CA.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from upstream import APP, routed

pytestmark = pytest.mark.timeout(120)

SCRIPT = r"""
import json, sys
import fal_client
print(json.dumps(list(fal_client.stream(sys.argv[1], json.loads(sys.argv[2])))))
"""
APPS = Path(__file__).with_name("fastapi_apps.py")


def throwaway_tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1: (ca, cert chain, key) files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(files[0])
    files[1].write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(files[2])
    return files


def fal_env(host: str, ca: Path) -> dict[str, str]:
    """fal-client pointed at a router on ``host``, trusting ``ca``."""
    return {
        **os.environ,
        "FAL_RUN_HOST": host,
        "FAL_KEY": "id:secret",
        "SSL_CERT_FILE": str(ca),
        "NO_PROXY": "*",
    }


def test_fal_client_stream_against_yurt_run(tmp_path: Path) -> None:
    """fal_client.stream reads a StreamingResponse endpoint of an app served by ``yurt run``."""
    ca, cert, key = throwaway_tls(tmp_path)
    command = [sys.executable, "-m", "yurt.cli", "run", f"{APPS}::FastApiStyle", "--port", "0",
               "--tls-cert", str(cert), "--tls-key", str(key),
               "--data-dir", str(tmp_path / "data"), "--log-format", "json"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the URL is printed (or the process dies)
        match = re.search(r"at https://([^/\s]+)/(\S+)", line)
        assert match, f"yurt run printed {line!r}"
        host, app_id = match.group(1), match.group(2).strip("/")
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, app_id, json.dumps({"count": 3})],
            env=fal_env(host, ca),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [{"i": 0}, {"i": 1}, {"i": 2}]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_fal_client_stream_reads_every_event(tmp_path: Path) -> None:
    """Each event the runner streams reaches fal_client.stream as one decoded object."""
    ca_file, chain, key = throwaway_tls(tmp_path)
    asked: list[str] = []

    async def events(request: web.BaseRequest) -> web.StreamResponse:
        asked.append(request.path)
        count = json.loads(await request.read())["count"]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(count):
            await response.write(f'data: {{"i": {i}}}\n\n'.encode())
        await response.write_eof()
        return response

    async with routed(events, "fast", tls_cert=chain, tls_key=key) as rig:
        host = rig.router.url.split("://", 1)[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SCRIPT,
            APP,
            json.dumps({"count": 3}),
            env=fal_env(host, ca_file),
            stdout=-1,
            stderr=-1,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert asked == ["/stream"]
