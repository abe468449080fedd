"""fal's background-removal demo, with its imports changed from ``fal`` to ``yurt``.

Source: ``fal_demos/image/birefnet_rmbg.py`` in github.com/fal-ai-community/fal-demos (commit
7d44663b), by fal.ai; that repository states no licence. The app's use of fal (its models with
toolkit ``Image`` fields, class, setup, helpers and endpoint) follows the original; descriptions
are shortened, and the BiRefNet weights with torch, torchvision and transformers that load them
are replaced by a stand-in: a brightness threshold stands for the predicted mask.
"""

from typing import Literal

import yurt as fal
from yurt.toolkit import Image
from pydantic import BaseModel, Field


class BackgroundRemovalInput(BaseModel):
    image_url: str = Field(
        title="Image URL",
        description="URL of the image to remove the background from.",
        examples=[
            "https://storage.googleapis.com/falserverless/model_tests/video_models/robot.png",
        ],
    )
    return_mask: bool = Field(
        default=False,
        description="If true, also return the grayscale alpha mask.",
    )
    output_format: Literal["png"] = Field(
        default="png",
        description="The output format. PNG is used to preserve transparency.",
    )


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
    mask: Image | None = Field(
        default=None,
        description="The optional grayscale alpha mask.",
    )


class BiRefNetRMBG(fal.App):
    def setup(self):
        # Stand-in for the segmentation model and its input transform.
        self.model = lambda gray: gray.point(lambda value: 255 if value > 127 else 0)
        self.transform = lambda image: image.convert("L")

    def _download_image(self, image_url: str):
        from io import BytesIO
        from urllib.request import urlopen

        from PIL import Image as PILImage

        with urlopen(image_url, timeout=30) as response:
            return PILImage.open(BytesIO(response.read())).convert("RGB")

    def _predict_mask(self, image):
        return self.model(self.transform(image)).resize(image.size)

    @fal.endpoint("/")
    async def remove_background(
        self,
        input: BackgroundRemovalInput,
    ) -> BackgroundRemovalOutput:
        from PIL import Image as PILImage

        image = self._download_image(input.image_url)
        mask = self._predict_mask(image)

        output = PILImage.new("RGBA", image.size, (0, 0, 0, 0))
        output.paste(image.convert("RGBA"), mask=mask)

        return BackgroundRemovalOutput(
            image=Image.from_pil(output, input.output_format),
            mask=Image.from_pil(mask, input.output_format) if input.return_mask else None,
        )
