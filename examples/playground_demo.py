"""An App whose five endpoints show what the playground draws: text, a bounded number, a choice,
an image in and an image out, a slow request that logs and can be cancelled, and a stream.
CPU only (Pillow). ``yurt run examples/playground_demo.py::PlaygroundDemo``, then open the
router's address in a browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Literal

from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import yurt
from yurt.toolkit import Image, ImageField

log = logging.getLogger("playground_demo")

Filter = Literal["none", "grayscale", "invert", "blur"]


class Transform(BaseModel):
    caption: str = Field(description="text written on the image", examples=["a yurt"])
    size: int = Field(default=128, ge=16, le=512, description="width of the result in pixels")
    filter: Filter = Field(default="grayscale", description="what to do to the image")
    image: Image = ImageField(description="the image to transform")


class Transformed(BaseModel):
    image: Image
    caption: str


class Paint(BaseModel):
    color: Literal["red", "green", "blue", "white", "black"] = Field(
        default="red", description="the colour to paint"
    )
    width: int = Field(default=64, ge=1, le=1024, description="width in pixels")
    height: int = Field(default=48, ge=1, le=1024, description="height in pixels")


class Painted(BaseModel):
    image: Image


class Shape(BaseModel):
    name: str = Field(default="circle", description="what the shape is called")
    sides: int = Field(default=0, ge=0, le=12)


class Describe(BaseModel):
    words: list[str] = Field(default=["felt", "wood"], description="words to count")
    loud: bool = Field(default=False, description="answer in capitals")
    shape: Shape = Field(default_factory=Shape, description="a nested object")
    ratio: float = Field(default=0.5, ge=0.0, le=1.0, description="a fraction")


class Described(BaseModel):
    text: str
    count: int


class Wait(BaseModel):
    seconds: float = Field(default=5.0, ge=0.0, le=120.0, description="how long to work")
    steps: int = Field(default=5, ge=1, le=100, description="log lines to write on the way")


class Waited(BaseModel):
    steps: int


class Count(BaseModel):
    upto: int = Field(default=5, ge=1, le=50, description="how many events to send")
    interval: float = Field(default=0.2, ge=0.0, le=5.0, description="seconds between events")


def _filtered(img: object, name: Filter) -> object:
    from PIL import Image as PILImage
    from PIL import ImageFilter, ImageOps

    assert isinstance(img, PILImage.Image)
    if name == "grayscale":
        return ImageOps.grayscale(img).convert("RGB")
    if name == "invert":
        return ImageOps.invert(img.convert("RGB"))
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(2))
    return img


class PlaygroundDemo(yurt.App, keep_alive=300, max_multiplexing=4):
    """Five endpoints, one of each kind of input and output the playground knows."""

    app_name = "playground-demo"
    machine_type = "CPU"

    @yurt.endpoint("/")
    def transform(self, body: Transform) -> Transformed:
        from PIL import Image as PILImage
        from PIL import ImageDraw

        img = body.image.to_pil()
        height = max(1, round(img.height * body.size / img.width))
        out = _filtered(img.resize((body.size, height)), body.filter)
        assert isinstance(out, PILImage.Image)
        ImageDraw.Draw(out).text((4, 4), body.caption, fill="white")
        return Transformed(image=Image.from_pil(out, "png"), caption=body.caption)

    @yurt.endpoint("/paint")
    def paint(self, body: Paint) -> Painted:
        from PIL import Image as PILImage

        canvas = PILImage.new("RGB", (body.width, body.height), body.color)
        return Painted(image=Image.from_pil(canvas, "png"))

    @yurt.endpoint("/describe")
    def describe(self, body: Describe) -> Described:
        text = f"{body.shape.name} with {body.shape.sides} sides: " + ", ".join(body.words)
        return Described(text=text.upper() if body.loud else text, count=len(body.words))

    @yurt.endpoint("/slow")
    async def slow(self, body: Wait) -> Waited:
        for step in range(body.steps):
            log.warning("step %d of %d", step + 1, body.steps)
            await asyncio.sleep(body.seconds / body.steps)
        return Waited(steps=body.steps)

    @yurt.endpoint("/stream")
    async def stream(self, body: Count) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for i in range(body.upto):
                yield f"data: {json.dumps({'i': i, 'of': body.upto})}\n\n"
                await asyncio.sleep(body.interval)

        return StreamingResponse(events(), media_type="text/event-stream")
