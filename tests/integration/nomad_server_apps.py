"""An App the yurt server test deploys beside the echo example: it answers what it is told."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

import yurt


class Order(BaseModel):
    status: int = 200
    seconds: float = 0.0


class Where(BaseModel):
    alloc: str
    pid: int


class Obedient(yurt.App, keep_alive=300, min_concurrency=1, max_concurrency=2):
    """Sleeps ``seconds``, then answers ``status``; says which allocation served it."""

    app_name = "obedient"

    @yurt.endpoint("/")
    def obey(self, body: Order) -> Where:
        time.sleep(body.seconds)
        if body.status != 200:
            raise yurt.AppException(f"told to answer {body.status}", body.status)
        return Where(alloc=os.environ.get("NOMAD_ALLOC_ID", ""), pid=os.getpid())


class NeedsH100(yurt.App, keep_alive=300, max_concurrency=1):
    """Asks for an H100, which the Nomad double's node has only when a test adds one."""

    app_name = "needs-h100"
    machine_type = "GPU-H100"

    @yurt.endpoint("/")
    def run(self) -> Where:
        return Where(alloc=os.environ.get("NOMAD_ALLOC_ID", ""), pid=os.getpid())


class NeedsH100Kept(yurt.App, keep_alive=300, min_concurrency=1, max_concurrency=1):
    """Asks for an H100 too, and is kept at one runner: its Count stays 1 with nobody calling,
    so Nomad's blocked evaluation holds until a test adds an H100."""

    app_name = "needs-h100-kept"
    machine_type = "GPU-H100"

    @yurt.endpoint("/")
    def run(self) -> Where:
        return Where(alloc=os.environ.get("NOMAD_ALLOC_ID", ""), pid=os.getpid())
