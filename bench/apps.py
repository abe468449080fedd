"""Apps used by the benchmarks (loaded with ``yurt.loader.load_app("bench/apps.py::Noop")``)."""

from pydantic import BaseModel

import yurt


class Msg(BaseModel):
    text: str
    n: int


class Noop(yurt.App):
    """A trivial async endpoint: validate a small body and return it unchanged."""

    app_name = "noop"
    max_multiplexing = 64
    max_concurrency = 1
    min_concurrency = 1
    keep_alive = 3600

    @yurt.endpoint("/")
    async def echo(self, body: Msg) -> Msg:
        return body
