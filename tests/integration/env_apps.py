"""Apps with requirements, served from environments built from a local wheel directory.

``yurt_test_pkg`` is never installed beside yurt: the tests write its wheels (1.0, 2.0) into a
find-links directory, and each app imports it inside its endpoint, in its runner.
"""

from __future__ import annotations

from pydantic import BaseModel

import yurt


class Ask(BaseModel):
    pass


class Version(BaseModel):
    version: str
    pid: int
    python: str


def _version() -> Version:
    import os
    import sys

    import yurt_test_pkg  # type: ignore[import-not-found]

    return Version(version=yurt_test_pkg.VERSION, pid=os.getpid(), python=sys.executable)


class PinsOne(yurt.App, keep_alive=300):
    requirements = ["yurt_test_pkg==1.0"]

    @yurt.endpoint("/")
    def version(self, body: Ask) -> Version:
        return _version()


class PinsTwo(yurt.App, keep_alive=300):
    requirements = ["yurt_test_pkg==2.0"]

    @yurt.endpoint("/")
    def version(self, body: Ask) -> Version:
        return _version()


class PinsTwoInSteps(yurt.App, keep_alive=300):
    """fal's list of lists: each inner list installed in order."""

    requirements = [["yurt_test_pkg==1.0"], ["yurt_test_pkg==2.0"]]  # type: ignore[list-item]

    @yurt.endpoint("/")
    def version(self, body: Ask) -> Version:
        return _version()


class PinsMissing(yurt.App, keep_alive=300):
    requirements = ["yurt_test_pkg==9.0"]

    @yurt.endpoint("/")
    def version(self, body: Ask) -> Version:
        return _version()


class TwoRunners(yurt.App, keep_alive=300, min_concurrency=2):
    requirements = ["yurt_test_pkg==1.0"]

    @yurt.endpoint("/")
    def version(self, body: Ask) -> Version:
        return _version()


class Said(BaseModel):
    text: str
    python: str


class Humanize(yurt.App, keep_alive=300):
    """humanize, from whatever index this machine's pip configuration names."""

    requirements = ["humanize>=4"]

    @yurt.endpoint("/")
    def say(self, body: Ask) -> Said:
        import sys

        import humanize  # type: ignore[import-not-found]

        return Said(text=humanize.naturalsize(1_000_000), python=sys.executable)
