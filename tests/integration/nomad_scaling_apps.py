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


SETUP_S = 6.0  # long enough that a request waiting for a runner to load shows it


class Revision(BaseModel):
    revision: str


class OneRunner(yurt.App, keep_alive=300, min_concurrency=1, max_concurrency=1):
    """One runner that loads for SETUP_S and says it is the first revision."""

    app_name = "one-runner"

    def setup(self) -> None:
        time.sleep(SETUP_S)

    @yurt.endpoint("/")
    def answer(self, body: Nothing) -> Revision:
        return Revision(revision="v1")


class OneRunnerV2(yurt.App, keep_alive=300, min_concurrency=1, max_concurrency=1):
    """The same app's next revision."""

    app_name = "one-runner"

    def setup(self) -> None:
        time.sleep(SETUP_S)

    @yurt.endpoint("/")
    def answer(self, body: Nothing) -> Revision:
        return Revision(revision="v2")
