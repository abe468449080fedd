"""``Image`` and image sizes, as fal's toolkit has them. Pillow is imported only by the methods
that need it (``from_pil`` is handed an image already; ``to_pil`` imports it)."""

from __future__ import annotations

import io
import tempfile
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from yurt.toolkit.file import Fallback, File, Repository, ui_field
from yurt.toolkit.repository import DEFAULT_REPOSITORY, FALLBACK_REPOSITORY

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]
ImageFormat = Literal["png", "jpeg", "jpg", "webp", "gif"]


class ImageSize(BaseModel):
    """A width and a height in pixels."""

    width: int = Field(default=512, description="The width of the generated image.", gt=0, le=14142)
    height: int = Field(
        default=512, description="The height of the generated image.", gt=0, le=14142
    )


IMAGE_SIZE_PRESETS: dict[str, ImageSize] = {
    "square_hd": ImageSize(width=1024, height=1024),
    "square": ImageSize(width=512, height=512),
    "portrait_4_3": ImageSize(width=768, height=1024),
    "portrait_16_9": ImageSize(width=576, height=1024),
    "landscape_4_3": ImageSize(width=1024, height=768),
    "landscape_16_9": ImageSize(width=1024, height=576),
}

ImageSizeInput = ImageSize | ImageSizePreset


def get_image_size(source: ImageSizeInput) -> ImageSize:
    """The size a preset name stands for, or ``source`` itself; ``TypeError`` otherwise."""
    if isinstance(source, ImageSize):
        return source
    if isinstance(source, str) and source in IMAGE_SIZE_PRESETS:
        return IMAGE_SIZE_PRESETS[source]
    raise TypeError(f"Invalid value for ImageSize: {source}")


def ImageField(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` the playground shows as an image input."""
    return ui_field("image", args=args, **kwargs)


def ImageSizeField(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` the playground shows as an image size picker."""
    return ui_field("image_size", args=args, **kwargs)


class Image(File):
    """An image file, with its width and height when known."""

    model_config = ConfigDict(json_schema_extra={"ui": {"field": "image"}})

    width: int | None = Field(
        default=None, description="The width of the image in pixels.", examples=[1024]
    )
    height: int | None = Field(
        default=None, description="The height of the image in pixels.", examples=[1024]
    )

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls,
        data: bytes,
        format: ImageFormat,
        size: ImageSize | None = None,
        file_name: str | None = None,
        repository: Repository = DEFAULT_REPOSITORY,
        fallback_repository: Fallback = FALLBACK_REPOSITORY,
        request: Any = None,
    ) -> Image:
        """Keep encoded image bytes of ``format`` (``image/<format>``)."""
        obj = super().from_bytes(
            data,
            content_type=f"image/{format}",
            file_name=file_name,
            repository=repository,
            fallback_repository=fallback_repository,
        )
        assert isinstance(obj, Image)
        obj.width = size.width if size else None
        obj.height = size.height if size else None
        return obj

    @classmethod
    def from_pil(
        cls,
        pil_image: PILImage.Image,
        format: ImageFormat | None = None,
        file_name: str | None = None,
        repository: Repository = DEFAULT_REPOSITORY,
        fallback_repository: Fallback = FALLBACK_REPOSITORY,
        request: Any = None,
    ) -> Image:
        """Encode a Pillow image (PNG unless it says or ``format`` says otherwise) and keep it.

        PNG at compression level 1 and JPEG at quality 95, as fal encodes them: fast enough
        for a reply, good enough to look at.
        """
        size = ImageSize(width=pil_image.width, height=pil_image.height)
        fmt = cast(ImageFormat, format or (pil_image.format or "png").lower())
        options: dict[str, Any] = {}
        if fmt == "png":
            options["compress_level"] = 1
        elif fmt in ("jpeg", "jpg"):
            options["quality"] = 95
        with io.BytesIO() as f:
            pil_image.save(f, format="jpeg" if fmt == "jpg" else fmt, **options)
            raw = f.getvalue()
        return cls.from_bytes(
            raw,
            fmt,
            size,
            file_name,
            repository,
            fallback_repository,
        )

    def to_pil(self, mode: str = "RGB") -> PILImage.Image:
        """Download the image and open it with Pillow, turned as its EXIF says."""
        from PIL import Image as PILImage
        from PIL import ImageOps

        from yurt.toolkit.download import fetch_to

        with tempfile.NamedTemporaryFile() as tmp:
            fetch_to(self.url, tmp.name)
            img = PILImage.open(tmp.name).convert(mode)
            return ImageOps.exif_transpose(img)
