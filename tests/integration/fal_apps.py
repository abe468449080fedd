"""Apps written with fal's spellings: its default name rule, ``name=``, its machine types."""

from __future__ import annotations

from pydantic import BaseModel

import yurt


class Image(BaseModel):
    url: str


class BiRefNetRMBG(yurt.App, keep_alive=300, machine_type="S"):
    @yurt.endpoint("/")
    def remove_background(self, body: Image) -> Image:
        return Image(url=body.url + "#rmbg")


class Upscaler(yurt.App, name="my-upscaler", keep_alive=300, machine_type="XS"):
    @yurt.endpoint("/")
    def upscale(self, body: Image) -> Image:
        return Image(url=body.url + "#x4")
