"""Fixtures for every test: each test has its own default data dir.

The suite runs in parallel (pytest-xdist, see tox.ini), so two tests must never share a port, a
file or a directory. Tests pass ``tmp_path`` and port 0 themselves; this catches the one shared
place a test can reach without naming it: yurt's default data dir (``~/.local/share/yurt``), used
by any command or config built without ``--data-dir``.
"""

from __future__ import annotations

import time

import pytest

from playground_driver import artifacts_dir

LOADED = time.time()  # before any test of this run wrote a screenshot


@pytest.fixture(autouse=True)
def own_default_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Point ``$XDG_DATA_HOME`` at a directory of this test's own (inherited by what it starts)."""
    monkeypatch.delenv("YURT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the browser tests' screenshots are (tests/browser), when this run wrote any."""
    directory = artifacts_dir()
    if directory.is_dir() and any(p.stat().st_mtime >= LOADED for p in directory.glob("*.png")):
        terminalreporter.write_line(f"playground screenshots: {directory}")
