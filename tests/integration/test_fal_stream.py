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
print(json.dumps(list(fal_client.stream(sys.argv[1], {"n": 3}))))
"""


async def test_fal_client_stream_reads_every_event(tmp_path: Path) -> None:
    """Each event the runner streams reaches fal_client.stream as one decoded object."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(ca_file)
    chain.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(key)
    asked: list[str] = []

    async def events(request: web.BaseRequest) -> web.StreamResponse:
        asked.append(request.path)
        count = json.loads(await request.read())["n"]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(count):
            await response.write(f'data: {{"i": {i}}}\n\n'.encode())
        await response.write_eof()
        return response

    async with routed(events, "fast", tls_cert=chain, tls_key=key) as rig:
        host = rig.router.url.split("://", 1)[1]
        env = {**os.environ, "FAL_RUN_HOST": host, "FAL_KEY": "id:secret"}
        env |= {"SSL_CERT_FILE": str(ca_file), "NO_PROXY": "*"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRIPT, APP, env=env, stdout=-1, stderr=-1
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert asked == ["/stream"]
