"""An app's persistent data directory on the local backend: real runners, real files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from appdata_apps import Keeper

from support import served, wait_until

pytestmark = pytest.mark.timeout(180)


async def test_a_file_written_by_one_runner_is_read_by_the_next(tmp_path: Path) -> None:
    """A note a runner leaves in YURT_APP_DATA_DIR is there for the runner after scale to zero."""
    async with served(Keeper, tmp_path) as app:
        status, first, _ = await app.post(json={})
        assert status == 200, first
        assert first["before"] is None
        await wait_until(lambda: not app.platform.backend.runners(app.app_id), what="scale to zero")
        status, second, _ = await app.post(json={})
        assert status == 200, second
        assert second["pid"] != first["pid"]  # another runner process
        assert second["before"] == f"written by {first['pid']}"


async def test_runners_are_told_the_directory_and_the_caches_in_it(tmp_path: Path) -> None:
    """Runners see DATA_DIR/appdata/<owner>/<app> (0700) as YURT_APP_DATA_DIR, caches under it."""
    async with served(Keeper, tmp_path) as app:
        status, note, _ = await app.post(json={})
        assert status == 200, note
    owner, name = app.app_id.split("/")
    root = tmp_path / "appdata" / owner / name
    assert note["env"] == {
        "YURT_APP_DATA_DIR": str(root),
        "HF_HOME": f"{root}/huggingface",
        "TORCH_HOME": f"{root}/torch",
        "XDG_CACHE_HOME": f"{root}/cache",
        "FAL_MODEL_WEIGHTS_DIR": f"{root}/.fal/model_weights",
    }
    assert note["mode"] == 0o700
    for d in (tmp_path / "appdata", tmp_path / "appdata" / owner, root):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert (root / "note.txt").read_text() == f"written by {note['pid']}"
