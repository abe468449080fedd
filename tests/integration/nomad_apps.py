"""Apps the Nomad backend tests run as real runner processes under the Nomad double."""

from __future__ import annotations

from pydantic import BaseModel

import yurt


class Ping(BaseModel):
    text: str = ""


class Tiny(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=60):
    """Ready as soon as it is loaded."""

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return body


class Broken(yurt.App, keep_alive=300, max_concurrency=2, startup_timeout=60):
    """Fails in setup(), so no runner of it ever becomes ready."""

    def setup(self) -> None:
        raise RuntimeError("no weights here")

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return body
