"""fal's demo apps with the import changed and their models replaced by small stand-ins.

``BiRefNetRMBG`` follows fal-demos' ``image/birefnet_rmbg.py`` (background removal returning
``Image``s); ``Kokoro`` follows ``tts/kokoro.py`` (text to speech returning a ``File`` made
with ``from_path(..., repository="cdn")``), without its ``fastapi.Response`` parameter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

import yurt as fal
from yurt.toolkit import File, Image


class BackgroundRemovalInput(BaseModel):
    image_url: str = Field(description="URL of the image to remove the background from.")
    return_mask: bool = Field(default=False, description="Also return the alpha mask.")
    output_format: Literal["png"] = Field(default="png", description="The output format.")


class BackgroundRemovalOutput(BaseModel):
    image: Image = Field(
        description="The foreground image with a transparent background.",
        examples=[
            Image(
                url="https://v3.fal.media/files/kangaroo/QAABS8yM6X99WhiMeLcoL.jpeg",
                width=1024,
                height=1024,
                content_type="image/png",
            )
        ],
    )
    mask: Image | None = Field(default=None, description="The optional grayscale alpha mask.")


class BiRefNetRMBG(fal.App, keep_alive=300):
    def setup(self) -> None:
        # The stand-in for the segmentation model: bright pixels are the foreground.
        self.threshold = 128

    def _download_image(self, image_url: str):  # type: ignore[no-untyped-def]
        from io import BytesIO
        from urllib.request import urlopen

        from PIL import Image as PILImage

        with urlopen(image_url, timeout=30) as response:
            return PILImage.open(BytesIO(response.read())).convert("RGB")

    def _predict_mask(self, image):  # type: ignore[no-untyped-def]
        return image.convert("L").point(lambda v: 255 if v >= self.threshold else 0)

    @fal.endpoint("/")
    async def remove_background(self, input: BackgroundRemovalInput) -> BackgroundRemovalOutput:
        from PIL import Image as PILImage

        image = self._download_image(input.image_url)
        mask = self._predict_mask(image)
        output = PILImage.new("RGBA", image.size, (0, 0, 0, 0))
        output.paste(image.convert("RGBA"), mask=mask)
        return BackgroundRemovalOutput(
            image=Image.from_pil(output, input.output_format),
            mask=Image.from_pil(mask, input.output_format) if input.return_mask else None,
        )


class AmEnglishRequest(BaseModel):
    prompt: str = Field(default="")
    voice: Literal["af_heart", "am_adam"] = Field(default="af_heart")
    speed: float = Field(default=1.0, ge=0.1, le=5.0)


class AmEngOutput(BaseModel):
    audio: File = Field(
        description="The generated music",
        examples=[File._from_url("https://fal.media/files/elephant/dXVMqWsBDG9yan3kaOT0Z.wav")],
    )


class Kokoro(fal.App, min_concurrency=0, max_concurrency=1, keep_alive=300, name="kokoro"):
    machine_type = "L"

    async def setup(self) -> None:
        self.rate = 24000  # the stand-in speaks a tone per character

    @fal.endpoint("/")
    async def generate(self, request: AmEnglishRequest) -> AmEngOutput:
        import math
        import struct
        import tempfile
        import wave

        samples = int(self.rate * 0.01 * max(1, len(request.prompt)) / request.speed)
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(samples))
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            with wave.open(f.name, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(self.rate)
                w.writeframes(frames)
            return AmEngOutput(
                audio=File.from_path(f.name, content_type="audio/wav", repository="cdn")
            )
