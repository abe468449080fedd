"""``yurt run`` shows runner output on its console unless ``--quiet``; ``yurt server`` does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from yurt.cli.main import build_parser
from yurt.cli.options import config_from_args


@pytest.mark.parametrize(
    ("argv", "console"),
    [
        (["run", "a.py::A"], True),
        (["run", "a.py::A", "--quiet"], False),
        (["server"], False),
    ],
)
def test_console_flag(
    argv: list[str], console: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The flag lands in LocalBackendConfig.console."""
    monkeypatch.setenv("YURT_DATA_DIR", str(tmp_path))
    assert config_from_args(build_parser().parse_args(argv)).local.console is console
