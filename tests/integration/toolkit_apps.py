"""Apps the toolkit tests serve: images and videos out, files in, as fal apps write them."""

from __future__ import annotations

import hashlib
import tempfile

from pydantic import BaseModel

import yurt
from yurt.toolkit import File, Image, ImageSizeInput, Video, download_file, get_image_size


class Paint(BaseModel):
    color: str = "red"
    image_size: ImageSizeInput = "square"


class Painted(BaseModel):
    image: Image


def painting(color: str, width: int, height: int) -> bytes:
    """The PNG ``Painter`` returns, as ``Image.from_pil`` encodes it (compress_level=1)."""
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(buf, format="png", compress_level=1)
    return buf.getvalue()


class Painter(yurt.App, keep_alive=300):
    """Returns a plain-colour image of the size asked for."""

    @yurt.endpoint("/")
    def paint(self, body: Paint) -> Painted:
        from PIL import Image as PILImage

        size = get_image_size(body.image_size)
        canvas = PILImage.new("RGB", (size.width, size.height), body.color)
        return Painted(image=Image.from_pil(canvas))


class Clip(BaseModel):
    size: int


class Clipped(BaseModel):
    video: Video


def clip_bytes(size: int) -> bytes:
    """The bytes of ``Filmmaker``'s video of ``size`` bytes."""
    return bytes(i % 251 for i in range(size))


class Filmmaker(yurt.App, keep_alive=300):
    """Returns a "video" of known bytes."""

    @yurt.endpoint("/")
    def film(self, body: Clip) -> Clipped:
        return Clipped(video=Video.from_bytes(clip_bytes(body.size), "video/mp4", "clip.mp4"))


class Input(BaseModel):
    file: File


class Digest(BaseModel):
    size: int
    sha256: str


class Reader(yurt.App, keep_alive=300):
    """Downloads the file it is given and answers with its size and digest."""

    @yurt.endpoint("/")
    def read(self, body: Input) -> Digest:
        with tempfile.TemporaryDirectory() as tmp:
            path = download_file(body.file.url, tmp)
            digest = hashlib.sha256()
            size = 0
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        return Digest(size=size, sha256=digest.hexdigest())
