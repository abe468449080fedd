"""An app that keeps a note in its persistent data directory, for the data-dir tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel

import yurt

# What a runner is told about its data directory (``yurt.appdata``).
NAMES = ("YURT_APP_DATA_DIR", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "FAL_MODEL_WEIGHTS_DIR")


class Note(BaseModel):
    before: str | None
    pid: int
    env: dict[str, str | None]
    mode: int


class Keeper(yurt.App, keep_alive=0.5, max_concurrency=1):
    """Reads the note an earlier runner left in the data directory, then leaves its own."""

    @yurt.endpoint("/")
    def run(self) -> Note:
        root = Path(os.environ["YURT_APP_DATA_DIR"])
        note = root / "note.txt"
        before = note.read_text() if note.exists() else None
        note.write_text(f"written by {os.getpid()}")
        return Note(
            before=before,
            pid=os.getpid(),
            env={name: os.environ.get(name) for name in NAMES},
            mode=stat.S_IMODE(root.stat().st_mode),
        )
