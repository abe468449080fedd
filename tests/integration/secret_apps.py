"""Apps that secrets tests deploy: one that shows what its environment holds, one that requires
a secret."""

from __future__ import annotations

import os

from pydantic import BaseModel

import yurt


class Name(BaseModel):
    name: str


class Seen(BaseModel):
    value: str | None
    pid: int


class ShowEnv(yurt.App, keep_alive=0.5):
    """Answers with the value of an environment variable, and which runner read it (a short
    keep_alive: the next request after a pause gets a new runner)."""

    app_name = "show-env"

    @yurt.endpoint("/")
    def show(self, body: Name) -> Seen:
        return Seen(value=os.environ.get(body.name), pid=os.getpid())


class NeedsToken(yurt.App, keep_alive=300):
    """Cannot start without the secret ``NEEDED_TOKEN``."""

    app_name = "needs-token"
    required_secrets = ["NEEDED_TOKEN"]

    @yurt.endpoint("/")
    def show(self, body: Name) -> Seen:
        return Seen(value=os.environ.get(body.name), pid=os.getpid())
