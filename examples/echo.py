"""The smallest App: echoes a prompt back. ``yurt run examples/echo.py::Echo``."""

from pydantic import BaseModel, Field

import yurt


class Prompt(BaseModel):
    prompt: str = Field(description="text to echo", examples=["a yurt on the steppe"])


class Reply(BaseModel):
    text: str


class Echo(yurt.App):
    app_name = "echo"
    machine_type = "CPU"
    max_concurrency = 4
    keep_alive = 30

    def setup(self) -> None:
        self.prefix = "echo: "

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=self.prefix + body.prompt)
