"""A runner's tracebacks name the user's file and line, where the app file is not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from yurt.loader import load_app
from yurt.packaging import write_payload

pytestmark = pytest.mark.timeout(120)

APP = textwrap.dedent(
    """\
    import yurt


    def load_weights(path: str) -> None:
        raise FileNotFoundError(path)


    class Weights(yurt.App):
        def setup(self) -> None:
            load_weights("/models/absent.bin")

        @yurt.endpoint("/")
        def run(self) -> None:
            pass
    """
)


@pytest.fixture
def clean_imports() -> Iterator[None]:
    """Leave sys.path and sys.modules as they were before load_app."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in [m for m in sys.modules if m.startswith("yurt_app_")]:
        del sys.modules[name]


def test_setup_traceback_names_the_users_file_and_line(tmp_path: Path, clean_imports: None) -> None:
    """A runner whose setup() raises prints the app's file, line and code, not <dynamic-code>."""
    app = tmp_path / "weights_app.py"
    app.write_text(APP)
    _, payload = write_payload(load_app(f"{app}::Weights"), tmp_path / "payloads")
    app.unlink()  # a runner on another machine has the payload only
    proc = subprocess.run(
        [sys.executable, "-m", "yurt.runner", "--payload", str(payload), "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "<dynamic-code>" not in proc.stderr
    assert f'File "{app}", line 10, in setup\n    load_weights("/models/absent.bin")' in proc.stderr
    assert (
        f'File "{app}", line 5, in load_weights\n    raise FileNotFoundError(path)' in proc.stderr
    )
