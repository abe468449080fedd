"""An App with a slow ``setup()`` (a stand-in for loading a model) that serves several requests
at once on each runner. ``yurt run examples/slow_setup.py::Summarizer``.
"""

import asyncio
import time

from pydantic import BaseModel, Field

import yurt


class Document(BaseModel):
    text: str = Field(description="text to summarise", examples=["Nomad places, Consul finds."])
    delay: float = Field(default=0.5, ge=0, le=30, description="seconds of simulated inference")


class Summary(BaseModel):
    summary: str
    words: int


class Summarizer(yurt.App, keep_alive=60, max_multiplexing=4, max_concurrency=2):
    def setup(self) -> None:
        time.sleep(3)  # the "model" takes a while to load; health says 503 meanwhile
        self.loaded_at = time.time()

    @yurt.endpoint("/")
    async def summarize(self, body: Document) -> Summary:
        await asyncio.sleep(body.delay)  # async, so one runner overlaps max_multiplexing calls
        words = body.text.split()
        return Summary(summary=" ".join(words[:8]), words=len(words))
