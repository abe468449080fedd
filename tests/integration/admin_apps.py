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
