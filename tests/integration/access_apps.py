"""Apps the access tests serve: a private one (fal's default) and a public one."""

from __future__ import annotations

from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class Private(yurt.App, keep_alive=300):
    """app_auth left to its default, private: a key is wanted once the server has one."""

    app_name = "private"

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"private: {body.prompt}")


class Public(yurt.App, keep_alive=300):
    """Anyone may call it, keys or not."""

    app_name = "public"
    app_auth = "public"

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=f"public: {body.prompt}")
