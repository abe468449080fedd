"""fal's text-to-speech demo (Kokoro), with its imports changed from ``fal`` to ``yurt``.

Source: ``fal_demos/tts/kokoro.py`` in github.com/fal-ai-community/fal-demos (commit e88637ef),
by fal.ai; that repository states no licence. The app's use of fal follows the original: its
request and output models (``File`` outputs with ``File._from_url`` examples, fields with
``ui=``), class keywords, an async ``setup()``, ``FieldException``, an injected
``fastapi.Response`` carrying ``x-fal-billable-units``, ``File.from_path(...,
repository="cdn")`` and four endpoints. Voice lists and examples are shortened; the Kokoro
model with kokoro, numpy and soundfile is replaced by a stand-in that writes a short WAV per line,
and the ``requirements`` that installed them (kokoro, misaki, soundfile, numpy, a spaCy model)
are left out with them.
"""

from typing import Literal

import yurt as fal
from yurt.exceptions import FieldException
from yurt.toolkit import File
from fastapi import Response
from pydantic import BaseModel, Field


class KPipeline:
    """Stand-in for ``kokoro.KPipeline``: 10 ms of 24 kHz 16-bit silence per line of prompt."""

    def __init__(self, lang_code):
        self.lang_code = lang_code

    def __call__(self, text, voice, speed, split_pattern):
        import re

        for line in re.split(split_pattern, text):
            yield line, voice, b"\x00\x00" * int(240 / speed)


class AmEnglishRequest(BaseModel):
    prompt: str = Field(
        default="",
        examples=["The future belongs to those who believe in the beauty of their dreams."],
        ui={"important": True},
    )
    text: str = Field(
        default="",
        examples=["The future belongs to those who believe in the beauty of their dreams."],
    )
    voice: Literal["af_heart", "af_alloy", "am_adam", "am_echo"] = Field(
        examples=["af_heart"],
        default="af_heart",
        description="Voice ID for the desired voice.",
    )
    speed: float = Field(
        default=1.0,
        ge=0.1,
        le=5.0,
        description="Speed of the generated audio. Default is 1.0.",
    )


class BrEnglishRequest(BaseModel):
    prompt: str = Field(examples=["Ladies and gentlemen, welcome aboard."])
    voice: Literal["bf_alice", "bf_emma", "bm_daniel", "bm_george"] = Field(
        examples=["bf_alice"],
        description="Voice ID for the desired voice.",
    )
    speed: float = Field(
        default=1.0,
        ge=0.1,
        le=5.0,
        description="Speed of the generated audio. Default is 1.0.",
    )


class JapaneseRequest(BaseModel):
    prompt: str = Field(examples=["夢を追いかけることを恐れないでください。"])
    voice: Literal["jf_alpha", "jf_gongitsune", "jm_kumo"] = Field(
        examples=["jf_alpha"],
        description="Voice ID for the desired voice.",
    )
    speed: float = Field(
        default=1.0,
        ge=0.1,
        le=5.0,
        description="Speed of the generated audio. Default is 1.0.",
    )


class AmEngOutput(BaseModel):
    audio: File = Field(
        description="The generated music",
        examples=[
            File._from_url("https://fal.media/files/elephant/dXVMqWsBDG9yan3kaOT0Z_tmp0vvkha3s.wav")
        ],
    )


class BrEngOutput(BaseModel):
    audio: File = Field(
        description="The generated music",
        examples=[
            File._from_url("https://fal.media/files/kangaroo/4wpA60Kum6UjOVBKJoNyL_tmpxfrkn95k.wav")
        ],
    )


class JapaneseOutput(BaseModel):
    audio: File = Field(
        description="The generated music",
        examples=[
            File._from_url("https://fal.media/files/lion/piLhqKO8LJxrWaNg2dVUv_tmpp6eff6zl.wav")
        ],
    )


class Kokoro(
    fal.App,
    min_concurrency=0,  # type: ignore
    max_concurrency=1,  # type: ignore
    keep_alive=3000,  # type: ignore
    name="kokoro",  # type: ignore
):
    machine_type = "L"

    async def setup(self):
        self.pipelines = {}
        self.pipelines["American English"] = KPipeline(lang_code="a")
        self.pipelines["British English"] = KPipeline(lang_code="b")
        self.pipelines["Japanese"] = KPipeline(lang_code="j")

    async def _generate(
        self,
        request: AmEnglishRequest,
        response: Response,
        language: str = "American English",
    ):
        prompt = request.prompt or request.text
        if len(prompt) >= 20000:
            raise FieldException(
                field="prompt",
                message="Prompt must be less than 20000 characters.",
            )

        import tempfile
        import wave

        pipeline = self.pipelines[language]
        generator = pipeline(
            prompt,
            voice=request.voice,
            speed=request.speed,
            split_pattern=r"\n+",
        )
        final_audio = b"".join(audio for _, _, audio in generator)

        response.headers["x-fal-billable-units"] = str(max(1, len(prompt) // 1000))

        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            with wave.open(f.name, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(24000)
                out.writeframes(final_audio)
            return AmEngOutput(
                audio=File.from_path(f.name, content_type="audio/wav", repository="cdn")
            )

    @fal.endpoint("/")
    async def generate(self, request: AmEnglishRequest, response: Response) -> AmEngOutput:
        return await self._generate(request, response, language="American English")

    @fal.endpoint("/american-english")
    async def generate_am_english(
        self, request: AmEnglishRequest, response: Response
    ) -> AmEngOutput:
        return await self._generate(request, response, language="American English")

    @fal.endpoint("/british-english")
    async def generate_br_english(
        self, request: BrEnglishRequest, response: Response
    ) -> BrEngOutput:
        return await self._generate(request, response, language="British English")

    @fal.endpoint("/japanese")
    async def generate_japanese(
        self, request: JapaneseRequest, response: Response
    ) -> JapaneseOutput:
        return await self._generate(request, response, language="Japanese")
