"""Apps deployed through the admin API: two revisions of one app, told apart by their answers."""

from __future__ import annotations

from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class GreeterV1(yurt.App, keep_alive=300):
    app_name = "greeter"

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"v1: {body.prompt}")


class GreeterV2(yurt.App, keep_alive=300):
    app_name = "greeter"

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"v2: {body.prompt}")


class GpuGreeter(yurt.App, keep_alive=300):
    app_name = "gpu-greeter"
    machine_type = "GPU-H100"
    num_gpus = 1

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"gpu: {body.prompt}")


class GreeterGated(yurt.App, keep_alive=300, startup_timeout=120):
    """A revision whose setup waits for the file $YURT_TEST_GATE (a model still loading)."""

    app_name = "greeter"

    def setup(self) -> None:
        import os
        import time

        gate = os.environ["YURT_TEST_GATE"]
        while not os.path.exists(gate):
            time.sleep(0.05)

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"gated: {body.prompt}")


class GreeterBroken(yurt.App, keep_alive=300):
    """A revision whose setup fails."""

    app_name = "greeter"

    def setup(self) -> None:
        raise RuntimeError("the new model file is corrupt")

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"broken: {body.prompt}")
