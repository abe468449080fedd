"""An App the Nomad scaling tests deploy: its runners load for as long as a test runs."""

from __future__ import annotations

import time

from pydantic import BaseModel

import yurt


class Nothing(BaseModel):
    pass


class Loading(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=600):
    """Never finishes setup() within a test: no runner of it becomes healthy."""

    app_name = "loading"

    def setup(self) -> None:
        time.sleep(3600)

    @yurt.endpoint("/")
    def answer(self, body: Nothing) -> Nothing:
        return body
