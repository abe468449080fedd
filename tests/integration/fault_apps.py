"""Apps for the fault tests: runners that die, fail to set up, or print a lot."""

from __future__ import annotations

import os
import sys

from pydantic import BaseModel

import yurt


class Empty(BaseModel):
    pass


class Pid(BaseModel):
    pid: int


class KeptWarm(yurt.App, keep_alive=300):
    """Kept only by keep_alive: nothing needs it once it is idle."""

    @yurt.endpoint("/")
    def pid(self, body: Empty) -> Pid:
        return Pid(pid=os.getpid())


class AlwaysOne(yurt.App, keep_alive=300, min_concurrency=1):
    """min_concurrency needs one runner at all times."""

    @yurt.endpoint("/")
    def pid(self, body: Empty) -> Pid:
        return Pid(pid=os.getpid())


class BrokenSetup(yurt.App, keep_alive=300, startup_timeout=20):
    """setup() raises with a message of its own."""

    def setup(self) -> None:
        raise RuntimeError("no weights to load")

    @yurt.endpoint("/")
    def pid(self, body: Empty) -> Pid:
        return Pid(pid=os.getpid())


class Talker(yurt.App, keep_alive=300, min_concurrency=1):
    """Prints to stdout and stderr as it sets up and serves."""

    def setup(self) -> None:
        print("hello from setup", flush=True)

    @yurt.endpoint("/")
    def pid(self, body: Empty) -> Pid:
        print("to stderr from a request", file=sys.stderr, flush=True)
        return Pid(pid=os.getpid())
