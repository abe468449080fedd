"""Apps for the error-shape tests: a typed body, and endpoints returning what JSON cannot hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Opaque:
    """An object JSON has no form for."""


class Shapes(yurt.App, keep_alive=300):
    """Validates a body, and returns values that cannot be serialised."""

    @yurt.endpoint("/")
    def echo(self, body: Prompt) -> dict[str, str]:
        return {"prompt": body.prompt}

    @yurt.endpoint("/set")
    def a_set(self) -> object:
        return {1, 2}

    @yurt.endpoint("/object")
    def an_object(self) -> object:
        return {"value": Opaque()}


class Started(BaseModel):
    started: str  # a file the endpoint creates once it runs


class Waits(yurt.App, keep_alive=300):
    """Runs until cancelled, having said so in a file."""

    @yurt.endpoint("/")
    async def wait(self, body: Started) -> dict[str, str]:
        await asyncio.to_thread(Path(body.started).touch)
        await asyncio.sleep(120)
        return {"text": "finished"}


class Release(BaseModel):
    release: str  # a file whose creation lets the endpoint answer


class Holds(yurt.App, keep_alive=300):
    """Answers once a file exists: a request served for as long as a test needs."""

    @yurt.endpoint("/")
    async def hold(self, body: Release) -> dict[str, str]:
        for _ in range(6000):  # two minutes at most
            if await asyncio.to_thread(Path(body.release).exists):
                return {"text": "released"}
            await asyncio.sleep(0.02)
        return {"text": "never released"}
