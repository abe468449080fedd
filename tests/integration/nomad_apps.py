"""Apps the Nomad backend tests run as real runner processes under the Nomad double."""

from __future__ import annotations

import time

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


class Slow(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=13):
    """setup() takes 8 s: a roll's two stages take longer together than one startup_timeout."""

    def setup(self) -> None:
        time.sleep(8)

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return body


class SlowB(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=13):
    """Slow's next revision."""

    def setup(self) -> None:
        time.sleep(8)

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return Ping(text="b" + body.text)


class Loading(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=60):
    """setup() takes 3 s, so that a roll's second stage lasts a while."""

    def setup(self) -> None:
        time.sleep(3)

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return body


class LoadingB(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=60):
    """Loading's next revision."""

    def setup(self) -> None:
        time.sleep(3)

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return Ping(text="b" + body.text)


class LoadingC(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=60):
    """Loading's revision after LoadingB."""

    def setup(self) -> None:
        time.sleep(3)

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return Ping(text="c" + body.text)


class OnH100(yurt.App, keep_alive=300, max_concurrency=4, startup_timeout=60):
    """Wants an H100, which the Nomad double's node lacks: Nomad cannot place it."""

    machine_type = "GPU-H100"

    @yurt.endpoint("/")
    def echo(self, body: Ping) -> Ping:
        return body
