"""fal's demo apps that use the toolkit run with only their import changed."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest
from fal_demo_apps import BiRefNetRMBG, Kokoro
from PIL import Image as PILImage

from support import served

pytestmark = pytest.mark.timeout(180)


async def test_background_removal_returns_images(tmp_path: Path) -> None:
    """The background remover reads an uploaded image and returns PNG image and mask URLs."""
    source = PILImage.new("RGB", (6, 4), "black")
    source.paste(PILImage.new("RGB", (3, 4), "white"), (0, 0))
    buf = io.BytesIO()
    source.save(buf, format="png")
    async with served(BiRefNetRMBG, tmp_path / "data") as app:
        async with app.session.post(
            f"{app.platform.url}/files/upload",
            data=buf.getvalue(),
            headers={"Content-Type": "image/png", "X-Fal-File-Name": "in.png"},
        ) as resp:
            assert resp.status == 200
            image_url = (await resp.json())["url"]
        status, body, _ = await app.post(json={"image_url": image_url, "return_mask": True})
        assert status == 200, body
        assert (body["image"]["width"], body["image"]["height"]) == (6, 4)
        async with app.session.get(body["image"]["url"]) as resp:
            assert resp.headers["content-type"] == "image/png"
            cutout = PILImage.open(io.BytesIO(await resp.read()))
        assert cutout.mode == "RGBA"
        assert cutout.getpixel((0, 0))[3] == 255 and cutout.getpixel((5, 0))[3] == 0
        assert body["mask"]["content_type"] == "image/png"


async def test_text_to_speech_returns_a_wav_file(tmp_path: Path) -> None:
    """The speech app's File.from_path(repository="cdn") output serves a WAV as audio/wav."""
    async with served(Kokoro, tmp_path / "data") as app:
        assert app.app_id == "default/kokoro"
        status, body, _ = await app.post(json={"prompt": "hello"})
        assert status == 200, body
        audio = body["audio"]
        assert audio["content_type"] == "audio/wav" and audio["file_name"].endswith(".wav")
        async with app.session.get(audio["url"]) as resp:
            assert resp.headers["content-type"] == "audio/wav"
            data = await resp.read()
        assert len(data) == audio["file_size"]
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getframerate(), w.getnframes()) == (24000, 1200)
