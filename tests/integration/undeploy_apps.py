"""Apps that undeploy tests take off a server: one that answers, one that never gets ready."""

from __future__ import annotations

from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class Quick(yurt.App, keep_alive=300):
    app_name = "quick"

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"quick: {body.prompt}")


class Stays(yurt.App, keep_alive=300):
    """Another app on the same server: an undeploy of ``quick`` leaves it alone."""

    app_name = "stays"

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"stays: {body.prompt}")


class Stuck(yurt.App, keep_alive=300, startup_timeout=600):
    """A runner whose setup() never ends (a model that loads for ever): requests wait."""

    app_name = "stuck"

    def setup(self) -> None:
        import time

        while True:
            time.sleep(0.05)

    @yurt.endpoint("/")
    def greet(self, body: Prompt) -> Reply:
        return Reply(text=f"stuck: {body.prompt}")


class Wait(BaseModel):
    seconds: float


class Patient(yurt.App, keep_alive=300, max_multiplexing=4, termination_grace_period_seconds=30):
    """Requests take a while; an undeploy gives them the grace period to finish."""

    app_name = "patient"

    @yurt.endpoint("/")
    async def wait(self, body: Wait) -> Reply:
        import asyncio

        await asyncio.sleep(body.seconds)
        return Reply(text=f"waited {body.seconds}")


class Hasty(yurt.App, keep_alive=300, max_multiplexing=4, termination_grace_period_seconds=0):
    """No grace period: an undeploy cuts a running request short."""

    app_name = "hasty"

    @yurt.endpoint("/")
    async def wait(self, body: Wait) -> Reply:
        import asyncio

        await asyncio.sleep(body.seconds)
        return Reply(text=f"waited {body.seconds}")
