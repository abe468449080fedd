"""Apps the client tests serve: replies, an error with a type, and a gate to queue behind."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class Gate(BaseModel):
    release: str  # the file whose creation lets the request finish


class Gated(yurt.App, keep_alive=300, max_concurrency=1):
    """One runner, one request at a time: a request held at /hold keeps the next ones queued."""

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        print(f"generating for {body.prompt}")
        return Reply(text="echo: " + body.prompt)

    @yurt.endpoint("/hold")
    def hold(self, body: Gate) -> Reply:
        # Bounded, so that a test failing before it opens the gate leaves no runner stuck.
        deadline = time.monotonic() + 120
        while not Path(body.release).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return Reply(text="released")

    @yurt.endpoint("/teapot")
    async def teapot(self, body: Prompt) -> web.Response:
        return web.json_response(
            {"detail": f"no {body.prompt} here", "error_type": "teapot"}, status=418
        )
