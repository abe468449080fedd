"""The app of ``test_queue_durability.py``: slow enough that work is pending when the router
dies, and counting every request it finishes in a file the test reads."""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel

import yurt


class Work(BaseModel):
    n: int
    count_file: str
    seconds: float = 0.05


class Done(BaseModel):
    n: int


class Counted(
    yurt.App,
    keep_alive=300,
    max_concurrency=2,
    max_multiplexing=4,
    startup_timeout=60,
):
    """Sleeps, then appends ``n request_id pid`` to ``count_file`` and answers ``{"n": n}``."""

    @yurt.endpoint("/")
    async def work(self, body: Work) -> Done:
        await asyncio.sleep(body.seconds)
        context = getattr(self, "current_request", None)
        request_id = getattr(context, "request_id", "") or "-"
        line = f"{body.n} {request_id} {os.getpid()}\n".encode()
        # One write(2) on an O_APPEND descriptor: lines from both runners never interleave.
        fd = os.open(body.count_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return Done(n=body.n)
