"""Public fal apps served by ``yurt run`` with only their imports changed.

Each ``fal_demo_*.py`` beside this file follows one public fal app (its header names the source):
the app's use of fal is kept as written there, with ``import fal`` changed to
``import yurt as fal`` and ``from fal.x import ...`` to ``from yurt.x import ...``; model weights
and the libraries that load them are replaced by small stand-ins. The tests start ``yurt run``
as a user would and call the apps with yurt's client, plain HTTP and fal's own client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.request
import uuid
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trustme
import websockets
from openapi_spec_validator import validate as validate_openapi
from test_gpu_fail_fast import A100, H100, env_with_fake_nvml

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
    pass_env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """``yurt run fal_demo_x.py::Class`` until the block ends; yields where the app answers.

    ``pass_env``: variables set for ``yurt run`` and passed on to its runners (``[local]
    pass_env``), as a user would give an app its own settings.
    """
    command = [sys.executable, "-m", "yurt.cli", "run", str(HERE / ref), "--port", "0",
               "--data-dir", str(data_dir), "--quiet", *options]  # fmt: skip
    if tls is not None:
        command += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    if pass_env:
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir.parent / f"{data_dir.name}.toml"
        config.write_text(f"[local]\npass_env = {json.dumps(sorted(pass_env))}\n")
        command += ["--config", str(config)]
        env = {**(env if env is not None else os.environ), **pass_env}
    # stderr to a file: a pipe nobody reads while the app runs could fill and stall yurt run.
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    err_path = data_dir.parent / f"{data_dir.name}.stderr"
    with err_path.open("w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)

    def stderr_tail() -> str:
        return err_path.read_text()[-3000:]

    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the URL line, or "" once the process has died
        match = re.search(r"at (https?://[^/\s]+)/(\S+)", line)
        if match is None:
            proc.wait(timeout=STOP_S)
            pytest.fail(f"yurt run {ref} printed {line!r}; stderr:\n{stderr_tail()}")
        yield Served(match.group(1), match.group(2).rstrip("/"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 0, stderr_tail()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


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


def png_data_uri() -> str:
    """A 4x2 PNG, white on the left half and black on the right, as a data: URI."""
    from PIL import Image as PILImage

    image = PILImage.new("RGB", (4, 2), (0, 0, 0))
    for x in range(2):
        for y in range(2):
            image.putpixel((x, y), (255, 255, 255))
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[str, bytes]:
    """GET ``url``: (content type, body)."""
    with urllib.request.urlopen(url, timeout=60, context=context) as resp:
        return resp.headers.get("content-type", ""), resp.read()


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


# -- fal-demos: background removal returning toolkit Images -------------------------------------


FAL_SUBSCRIBE = r"""
import json, sys
import fal_client

app, image_url = sys.argv[1:3]
print(json.dumps(fal_client.subscribe(app, {"image_url": image_url, "return_mask": True})))
"""


def test_birefnet_background_removal(tmp_path: Path, tls: Tls) -> None:
    """BiRefNetRMBG's Image URLs serve the cut-out PNG and mask: yurt's client and fal-client."""
    from PIL import Image as PILImage

    source = png_data_uri()
    with yurt_run("fal_demo_birefnet.py::BiRefNetRMBG", tmp_path / "data", tls=tls) as app:
        assert app.app_id == "default/bi-ref-net-r-m-b-g"
        with yurt.Client(app.base, ssl_context=tls.context()) as client:
            sync = client.run(app.app_id, {"image_url": source})
            queued = client.submit(app.app_id, {"image_url": source, "return_mask": True}).result()
        from_fal = run_fal_client(app, tls, FAL_SUBSCRIBE, source)
        assert sync["mask"] is None
        for out in (sync, queued, from_fal):
            image = out["image"]
            assert (image["width"], image["height"], image["content_type"]) == (4, 2, "image/png")
            assert image["url"].startswith(app.base + "/")
            content_type, body = fetch(image["url"], tls.context())
            assert content_type == "image/png"
            cut = PILImage.open(BytesIO(body))
            assert cut.mode == "RGBA" and cut.size == (4, 2)
            assert cut.getpixel((0, 0)) == (255, 255, 255, 255)  # kept
            assert cut.getpixel((3, 1))[3] == 0  # background gone
        for out in (queued, from_fal):
            _, mask = fetch(out["mask"]["url"], tls.context())
            assert PILImage.open(BytesIO(mask)).getpixel((3, 0)) == 0


# -- fal's docs: an input file fetched with download_file ---------------------------------------


def _remove_input(path: Path) -> None:
    """The downloaded file, and its directory once no other run's file is in it."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def test_docs_download_file(tmp_path: Path) -> None:
    """The docs' MyModel downloads a file uploaded with yurt's client, named in its query."""
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4
    env = env_with_fake_nvml(tmp_path, [A100])
    # The docs' app downloads into /tmp/inputs, outside any test's directory: a name of this
    # test's own, removed after, leaves nothing there and meets no other run's file.
    name = f"clip-{uuid.uuid4().hex}.mp4"
    with (
        contextlib.ExitStack() as cleanup,
        yurt_run("fal_demo_files.py::MyModel", tmp_path / "data", env=env) as app,
    ):
        cleanup.callback(_remove_input, Path("/tmp/inputs", name))
        assert app.app_id == "default/my-model"
        with yurt.Client(app.base) as client:
            url = client.upload(video, "video/mp4", name)
        reply = httpx.post(app.url, params={"video_url": url}, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"output": f"{len(video)} bytes starting '\\x00\\x00\\x00\\x18'"}
        missing = httpx.post(app.url, json={"video_url": url}, timeout=60)
        assert missing.status_code == 422  # a plain parameter is a query parameter, as in FastAPI
        assert missing.json()["detail"][0]["loc"] == ["query", "video_url"]


# -- fal-demos: text to speech returning a File, billing header, FieldException ----------------


def test_kokoro_text_to_speech(tmp_path: Path) -> None:
    """Kokoro: WAV Files on 4 paths, billing by 1000 characters, FieldException, valid OpenAPI."""
    with yurt_run("fal_demo_kokoro.py::Kokoro", tmp_path / "data") as app:
        assert app.app_id == "default/kokoro"
        prompt = "Ladies and gentlemen,\nwelcome aboard. " + "x" * 2000
        reply = httpx.post(
            f"{app.url}/british-english", json={"prompt": prompt, "voice": "bf_emma"}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-fal-billable-units"] == "2"
        audio = reply.json()["audio"]
        assert audio["content_type"] == "audio/wav"
        content_type, body = fetch(audio["url"])
        assert content_type == "audio/wav" and len(body) == audio["file_size"]
        with wave.open(BytesIO(body)) as wav:
            assert (wav.getframerate(), wav.getnframes()) == (24000, 2 * 240)  # two lines
        too_long = httpx.post(app.url, json={"prompt": "a" * 20000}, timeout=60)
        assert too_long.status_code == 422
        (item,) = too_long.json()["detail"]
        assert item["loc"] == ["body", "prompt"] and item["type"] == "value_error"
        assert item["msg"] == "Prompt must be less than 20000 characters."
        with yurt.Client(app.base) as client:
            for path in ("", "/american-english", "/japanese"):
                voice = {"/japanese": "jf_alpha"}.get(path, "af_heart")
                out = client.submit(app.app_id + path, {"prompt": "hi", "voice": voice}).result()
                assert out["audio"]["file_name"].endswith(".wav")
        bad_voice = httpx.post(
            f"{app.url}/japanese", json={"prompt": "hi", "voice": "af_heart"}, timeout=60
        )
        assert bad_voice.status_code == 422
        doc = httpx.get(f"{app.url}/openapi.json", timeout=60).json()
    validate_openapi(doc)
    assert sorted(doc["paths"]) == ["/", "/american-english", "/british-english", "/japanese"]
    (example,) = doc["components"]["schemas"]["JapaneseOutput"]["properties"]["audio"]["examples"]
    assert example["url"].endswith("piLhqKO8LJxrWaNg2dVUv_tmpp6eff6zl.wav")  # File._from_url's


# -- fal-demos: a proxy calling another app through fal-client ---------------------------------


def test_hunyuan3d_proxy_through_fal_client(tmp_path: Path, tls: Tls) -> None:
    """Hunyuan3D's endpoint calls fal-ai/hunyuan3d with fal_client.submit_async on another yurt."""
    with yurt_run(
        "fal_demo_hunyuan3d_upstream.py::Hunyuan3DStandIn",
        tmp_path / "upstream",
        "--owner",
        "fal-ai",
        tls=tls,
    ) as upstream:
        assert upstream.app_id == "fal-ai/hunyuan3d"
        # fal-client in the app reaches the stand-in through its documented variables; the
        # app's key is given as `yurt run` gives an app its own keys (secrets need a server).
        app_env = {
            "FAL_RUN_HOST": upstream.host,
            "FAL_QUEUE_RUN_HOST": f"{upstream.host}/queue",
            "SSL_CERT_FILE": str(tls.ca),
            "NO_PROXY": "*",
            "MY_SECRET_KEY": "key-id:key-secret",
        }
        with yurt_run(
            "fal_demo_hunyuan3d.py::Hunyuan3D", tmp_path / "data", pass_env=app_env
        ) as app:
            body = {"input_image_url": "https://example.invalid/robot.png", "seed": 7}
            with yurt.Client(app.base) as client:
                out = client.run(f"{app.app_id}/v2/mini/turbo", body)
        assert out == {
            "model_mesh": {
                "url": "https://example.invalid/white_mesh.glb",
                "content_type": "application/octet-stream",
                "file_name": "white_mesh.glb",
                "file_size": 720696,
            },
            "seed": 7,
        }


# -- fal's docs: HTTP, websocket and realtime endpoints in one app ------------------------------


# One websocket session per served app: a session opened right after another on the same
# runner can meet test_websocket_right_after_another_waits_for_the_slot's 429.


async def test_docs_realtime_app_websocket(tmp_path: Path) -> None:
    """The docs' RealtimeApp sends its three messages on /ws and closes cleanly; "/" answers."""
    with yurt_run("fal_demo_realtime.py::RealtimeApp", tmp_path / "data") as app:
        assert app.app_id == "default/realtime-app"
        async with yurt.AsyncClient(app.base) as client:
            assert await client.run(app.app_id, {"prompt": "http"}) == {"output": "http"}
        async with websockets.connect("ws" + app.url.removeprefix("http") + "/ws") as ws:
            messages = [json.loads(await ws.recv()) for _ in range(3)]
            assert messages == [{"message": "Hello world!"}] * 3
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()


async def test_docs_realtime_app_with_yurts_client(tmp_path: Path) -> None:
    """yurt's AsyncClient.connect drives the docs' /realtime endpoint, input after input."""
    with yurt_run("fal_demo_realtime.py::RealtimeApp", tmp_path / "data") as app:
        async with yurt.AsyncClient(app.base) as client, client.connect(app.app_id) as rt:
            for prompt in ("one", "two"):
                await rt.send({"prompt": prompt})
                assert await rt.recv() == {"output": prompt}


async def test_docs_realtime_app_msgpack_frames(tmp_path: Path) -> None:
    """fal's realtime wire format on /realtime: one msgpack map each way per input."""
    with yurt_run("fal_demo_realtime.py::RealtimeApp", tmp_path / "data") as app:
        url = "ws" + app.url.removeprefix("http") + "/realtime"
        async with websockets.connect(url) as raw:
            await raw.send(msgpack.packb({"prompt": "raw"}))
            assert msgpack.unpackb(await raw.recv()) == {"output": "raw"}


FAL_REALTIME = r"""
import json, sys
import fal_client

app, how = sys.argv[1:3]
if how == "realtime":
    with fal_client.realtime(app, use_jwt=False) as rt:
        out = []
        for prompt in ("one", "two"):
            rt.send({"prompt": prompt})
            out.append(rt.recv())
else:
    with fal_client.ws_connect(app, use_jwt=False, path="/ws") as ws:
        out = [json.loads(ws.recv()) for _ in range(3)]
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("realtime", [{"output": "one"}, {"output": "two"}]),
        ("ws_connect", [{"message": "Hello world!"}] * 3),
    ],
)
def test_docs_realtime_app_with_fal_client(
    tmp_path: Path, tls: Tls, how: str, expected: list[dict[str, str]]
) -> None:
    """fal-client's realtime and ws_connect reach the docs' RealtimeApp through yurt run's wss."""
    with yurt_run("fal_demo_realtime.py::RealtimeApp", tmp_path / "data", tls=tls) as app:
        assert run_fal_client(app, tls, FAL_REALTIME, how) == expected


# An app whose websocket handler still runs a moment after it closed the socket, as any handler
# does that tidies up after its session (the docs' RealtimeApp returns at once, so there the
# window is only the time the runner takes to end the call).
LINGERING_APP = """
import asyncio

import yurt
from fastapi import WebSocket


class Lingering(yurt.App, keep_alive=300):
    @yurt.endpoint("/ws", is_websocket=True)
    async def session(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()
        await asyncio.sleep(1.0)
"""


async def test_websocket_right_after_another_waits_for_the_slot(tmp_path: Path) -> None:
    """A websocket session opened as the last one closes waits for the runner's one slot."""
    app_file = tmp_path / "lingering.py"
    app_file.write_text(LINGERING_APP)
    with yurt_run(str(app_file) + "::Lingering", tmp_path / "data") as app:
        ws_url = "ws" + app.url.removeprefix("http") + "/ws"
        for _ in range(2):
            async with websockets.connect(ws_url) as ws:
                assert await ws.recv() == "hi"
                with pytest.raises(websockets.ConnectionClosedOK):
                    await ws.recv()


# -- fal's docs: a streaming endpoint, read with fal_client.stream over https -------------------

FAL_STREAM = r"""
import json, sys
from pathlib import Path
import fal_client

app, gate = sys.argv[1:3]
events = []
for event in fal_client.stream(app, {"prompt": "a yurt on the steppe"}):
    events.append(event)
    Path(gate).touch()  # only now may the app go past its first preview
print(json.dumps(events))
"""


def test_fal_client_stream_over_tls(tmp_path: Path, tls: Tls) -> None:
    """fal_client.stream reads the docs' SSE app through yurt run's https, event by event."""
    gate = tmp_path / "gate"
    env = env_with_fake_nvml(tmp_path, [H100])
    try:
        with yurt_run(
            "fal_demo_streaming.py::SDXLStreaming",
            tmp_path / "data",
            tls=tls,
            env=env,
            pass_env={"FAL_DEMO_STREAM_GATE": str(gate)},
        ) as app:
            events = run_fal_client(app, tls, FAL_STREAM, str(gate))
    finally:
        gate.touch()  # let a held stream go, whatever happened
    # The app waits after its first preview until the client has read it: had anything
    # between them held the stream back, the first event would never have arrived.
    assert events == [
        {"type": "progress", "step": 0, "preview": "A"},
        {"type": "progress", "step": 5, "preview": "A YURT"},
        {"type": "progress", "step": 10, "preview": "A YURT ON T"},
        {"type": "progress", "step": 15, "preview": "A YURT ON THE ST"},
        {"type": "complete", "image": "A YURT ON THE STEPPE"},
    ]
