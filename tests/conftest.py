"""Fixtures for every test: each test has its own default data dir.

The suite runs in parallel (pytest-xdist, see tox.ini), so two tests must never share a port, a
file or a directory. Tests pass ``tmp_path`` and port 0 themselves; this catches the one shared
place a test can reach without naming it: yurt's default data dir (``~/.local/share/yurt``), used
by any command or config built without ``--data-dir``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def own_default_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Point ``$XDG_DATA_HOME`` at a directory of this test's own (inherited by what it starts)."""
    monkeypatch.delenv("YURT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
