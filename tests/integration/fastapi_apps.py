"""Apps written as fal apps write them: FastAPI parameters, returns, exceptions, streams."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

import yurt
from yurt.exceptions import CUDAOutOfMemoryException, FieldException


class Prompt(BaseModel):
    prompt: str = Field(examples=["a yurt at dawn"])
    steps: int = Field(default=2, examples=[2, 4])


class Style(BaseModel):
    name: str = "plain"


class Reply(BaseModel):
    text: str


class Steps(BaseModel):
    count: int = 3
    gap: float = 0.0


class Gate(BaseModel):
    path: str


class FastApiStyle(yurt.App, keep_alive=300, max_multiplexing=2):
    """Every kind of FastAPI signature fal apps use."""

    @yurt.endpoint("/")
    def generate(self, prompt: Prompt, request: Request, response: Response) -> Reply:
        response.headers["x-fal-billable-units"] = str(prompt.steps)
        agent = request.headers.get("user-agent", "")
        return Reply(text=f"{prompt.prompt} ({len(agent) > 0})")

    @yurt.endpoint("/two")
    async def two(self, prompt: Prompt, style: Style) -> dict[str, Any]:
        return {"text": f"{style.name}: {prompt.prompt}"}

    @yurt.endpoint("/dict")
    def raw_dict(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"keys": sorted(body)}

    @yurt.endpoint("/plain")
    def plain(self, n: int) -> dict[str, int]:
        return {"twice": 2 * n}

    @yurt.endpoint("/response")
    def response(self, prompt: Prompt) -> Response:
        return PlainTextResponse(prompt.prompt.upper(), headers={"x-made-by": "app"})

    @yurt.endpoint("/json-response")
    async def json_response(self, request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"seen": body}, status_code=201)

    @yurt.endpoint("/http-exception")
    def http_exception(self, prompt: Prompt) -> Reply:
        raise HTTPException(status_code=418, detail={"why": prompt.prompt})

    @yurt.endpoint("/field")
    def field(self, prompt: Prompt) -> Reply:
        raise FieldException("prompt", "too dull", billable_units=1)

    @yurt.endpoint("/oom")
    def oom(self, prompt: Prompt, request: Request) -> Reply:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @yurt.endpoint("/context")
    def context(self, request: Request) -> dict[str, Any]:
        current = self.current_request
        assert current is not None
        print("context seen", flush=True)
        return {"endpoint": current.endpoint, "request_id": current.request_id}

    @yurt.endpoint("/wait")
    async def wait(self, request: Request) -> dict[str, bool]:
        await asyncio.sleep(3600)
        return {"waited": True}

    @yurt.endpoint("/background")
    def background(self, request: Request, tasks: BackgroundTasks) -> dict[str, bool]:
        """Queues a task that finishes only once the file named by ?path= exists."""
        gate = Path(request.query_params["path"])

        def later() -> None:
            while not gate.exists():
                time.sleep(0.02)
            Path(str(gate) + ".done").write_text("done")

        tasks.add_task(later)
        return {"queued": True}

    @yurt.endpoint("/headers")
    def headers(self, request: Request) -> dict[str, str]:
        return dict(request.headers)

    @yurt.endpoint("/stream")
    async def stream(self, steps: Steps) -> StreamingResponse:
        marker = os.environ.get("YURT_TEST_STREAM_MARKER")

        async def events() -> AsyncIterator[str]:
            try:
                for i in range(steps.count):
                    yield f"data: {json.dumps({'i': i})}\n\n"
                    await asyncio.sleep(steps.gap)
                    if marker:
                        Path(marker).write_text(str(i))  # noqa: ASYNC240
            finally:
                if marker:
                    Path(marker + ".closed").write_text("closed")  # noqa: ASYNC240

        return StreamingResponse(events(), media_type="text/event-stream")

    @yurt.endpoint("/gate")
    async def gate(self, request: Request) -> StreamingResponse:
        """Sends one event, then the second only once the file named by ?path= exists."""
        path = Path(request.query_params["path"])

        async def events() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            while not path.exists():  # noqa: ASYNC110, ASYNC240
                await asyncio.sleep(0.02)
            yield b"data: second\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @yurt.endpoint("/late")
    async def late(self, gate: Gate) -> AsyncIterator[Reply]:
        """Its stream's head at once; its one event only once the file ``gate.path`` exists."""
        while not Path(gate.path).exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.02)
        yield Reply(text="late")

    @yurt.endpoint("/late-asgi")
    async def late_asgi(self, gate: Gate) -> StreamingResponse:
        """A StreamingResponse whose one event comes only once the file ``gate.path`` exists."""

        async def events() -> AsyncIterator[str]:
            while not Path(gate.path).exists():  # noqa: ASYNC110, ASYNC240
                await asyncio.sleep(0.02)
            yield 'data: "late"\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    @yurt.endpoint("/echo", is_websocket=True)
    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive_text()
            if message == "bye":
                await websocket.close(code=4000, reason="bye")
                return
            await websocket.send_text(f"echo: {message}")

    @yurt.endpoint("/refuse", is_websocket=True)
    async def refuse(self, websocket: WebSocket) -> None:
        await websocket.close()


class ModelStyleExtras(yurt.App, keep_alive=300):
    """Model-style endpoints (the fast path) that raise fal's exceptions or stream."""

    @yurt.endpoint("/field")
    def field(self, prompt: Prompt) -> Reply:
        raise FieldException("prompt", "too dull")

    @yurt.endpoint("/gpu")
    def gpu(self, prompt: Prompt) -> Reply:
        raise CUDAOutOfMemoryException()

    @yurt.endpoint("/http-exception")
    def http_exception(self, prompt: Prompt) -> Reply:
        raise HTTPException(status_code=409, detail="taken", headers={"x-why": "taken"})

    @yurt.endpoint("/events")
    async def events(self, steps: Steps) -> AsyncIterator[Reply]:
        for i in range(steps.count):
            yield Reply(text=str(i))

    @yurt.endpoint("/sync-events")
    def sync_events(self, steps: Steps) -> Iterator[str]:
        for i in range(steps.count):
            yield f"line {i}"

    @yurt.endpoint("/slow-events")
    async def slow_events(self, steps: Steps) -> AsyncIterator[Reply]:
        marker = os.environ["YURT_TEST_STREAM_MARKER"]
        try:
            for i in range(steps.count):
                yield Reply(text=str(i))
                await asyncio.sleep(steps.gap)
        finally:
            Path(marker + ".closed").write_text("closed")  # noqa: ASYNC240

    @yurt.endpoint("/oom")
    def oom(self, prompt: Prompt) -> Reply:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @yurt.endpoint("/broken-events")
    async def broken_events(self, steps: Steps) -> AsyncIterator[Reply]:
        yield Reply(text="0")
        raise ValueError("the model exploded mid-stream")

    @yurt.endpoint("/starlette")
    def starlette(self, prompt: Prompt) -> Response:
        return PlainTextResponse(prompt.prompt, status_code=202)


class HealthByGet(yurt.App, keep_alive=300):
    """A FastAPI-style health check answered on GET, as fal's ``HealthCheck(method="GET")``."""

    @yurt.endpoint("/")
    def run(self, prompt: Prompt, response: Response) -> Reply:
        return Reply(text=prompt.prompt)

    @yurt.endpoint("/ping", health_check=yurt.HealthCheck(method="get", start_period_seconds=0))
    def ping(self, request: Request) -> dict[str, str]:
        if os.environ.get("YURT_TEST_UNHEALTHY"):
            raise HTTPException(status_code=500, detail="sick")
        return {"method": request.method}


class ExitHook(yurt.App, keep_alive=300):
    """fal's App hooks: ``version`` for GET /health, ``handle_exit`` told of a stop."""

    version = "7"

    def handle_exit(self) -> None:
        Path(os.environ["YURT_TEST_EXIT_MARKER"]).write_text("told")

    @yurt.endpoint("/")
    def run(self, prompt: Prompt) -> Reply:
        return Reply(text=prompt.prompt)
