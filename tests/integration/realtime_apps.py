"""Apps the realtime tests serve: unary with bytes, server streaming, a failing endpoint, and a
plain websocket beside them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import WebSocket
from pydantic import BaseModel

import yurt


class Frame(BaseModel):
    prompt: str
    image: bytes = b""


class Picture(BaseModel):
    text: str
    image: bytes
    seq: int


class Count(BaseModel):
    upto: int


class Tick(BaseModel):
    n: int


class Live(yurt.App, keep_alive=300, min_concurrency=1, max_multiplexing=4):
    """What fal's realtime demo apps look like: inputs in, one output each, on one socket."""

    def setup(self) -> None:
        self.served = 0

    @yurt.realtime("/realtime", buffering=8, session_timeout=60)
    def draw(self, input: Frame) -> Picture:
        self.served += 1
        return Picture(text="drawn: " + input.prompt, image=input.image[::-1], seq=self.served)

    @yurt.realtime("/count", session_timeout=60)
    async def count(self, input: Count) -> AsyncIterator[Tick]:
        for n in range(input.upto):
            yield Tick(n=n)

    @yurt.realtime("/broken", session_timeout=60)
    def broken(self, input: Frame) -> Picture:
        raise RuntimeError(f"cannot draw {input.prompt}")

    @yurt.endpoint("/ws", is_websocket=True)
    async def plain(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo: " + await websocket.receive_text())
        await websocket.close()

    @yurt.endpoint("/")
    def run(self, input: Frame) -> Picture:
        return Picture(text="posted: " + input.prompt, image=b"", seq=0)
