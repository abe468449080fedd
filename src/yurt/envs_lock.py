"""The lock that makes one builder of an environment: an exclusive ``flock`` on
``ROOT/<digest>.lock``, across threads and processes (two runners, two ``yurt run``s)."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

import structlog

from yurt.envs_progress import BuildEvent, ProgressSink
from yurt.privatefs import open_private

log = structlog.get_logger("yurt.envs")


class BuildLock:
    """Held while an environment is built or removed; says (to ``tell``) when it waits."""

    def __init__(self, path: Path, digest: str, tell: ProgressSink) -> None:
        self.path = path
        self.digest = digest
        self.tell = tell
        self._file: IO[str] | None = None

    def __enter__(self) -> BuildLock:
        self._file = open_private(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("env_build_waiting", env=self.digest[:12])
            self.tell(BuildEvent(self.digest, "waiting"))
            fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._file is not None
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
