"""``local_python_modules``: a package outside the app's folder travels with the payload."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from yurt.loader import load_app

from support import served

pytestmark = pytest.mark.timeout(180)

# ``fal_demos``-like layout: the app in repo/apps/, the package it imports at the repo's root.
PACKAGE = "yurt_sibling_words"
INIT = "GREETING = 'hello'\n"
SUB = textwrap.dedent(
    """\
    from pydantic import BaseModel

    from yurt_sibling_words import GREETING


    class Said(BaseModel):
        text: str


    def greet(name: str) -> str:
        return f"{GREETING}, {name}"
    """
)
APP = textwrap.dedent(
    """\
    import importlib.util

    import yurt
    from yurt_sibling_words.text import Said, greet


    # As fal's demos do: the app's output extends a model of the shared package.
    class Out(Said):
        importable: bool


    class Greeter(yurt.App, keep_alive=5, local_python_modules=[{listed}]):
        @yurt.endpoint("/")
        def run(self) -> Out:
            found = importlib.util.find_spec("yurt_sibling_words") is not None
            return Out(text=greet("runner"), importable=found)
    """
)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """repo/yurt_sibling_words/{__init__,text}.py and repo/apps/, the repo on sys.path (as a
    checkout installed in development mode is); both undone afterwards."""
    root = tmp_path / "repo"
    (root / PACKAGE).mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text(INIT)
    (root / PACKAGE / "text.py").write_text(SUB)
    (root / "apps").mkdir()
    path = list(sys.path)
    sys.path.insert(0, str(root))
    yield root
    sys.path[:] = path
    for name in [m for m in sys.modules if m.startswith(("yurt_app_", PACKAGE))]:
        del sys.modules[name]


def _app(repo: Path, listed: str) -> Path:
    app = repo / "apps" / "greeter.py"
    app.write_text(APP.replace("{listed}", listed))
    return app


async def test_a_listed_package_outside_the_app_folder_runs_on_a_runner(
    repo: Path, tmp_path: Path
) -> None:
    """A package from the repo's root named in local_python_modules serves on a runner that
    cannot import it (submodule included)."""
    cls = load_app(f"{_app(repo, repr(PACKAGE))}::Greeter")
    async with served(cls, tmp_path / "data") as app:
        status, body, _ = await app.post(json={})
    assert status == 200, body
    assert body == {"text": "hello, runner", "importable": False}


async def test_without_the_setting_the_runner_cannot_load_it(repo: Path, tmp_path: Path) -> None:
    """The same app without local_python_modules fails on the runner: the package is not there."""
    cls = load_app(f"{_app(repo, '')}::Greeter")
    async with served(cls, tmp_path / "data") as app:
        status, body, _ = await app.post(json={})
    assert status == 503, body
    assert body["error_type"] == "runner_scheduling_failure"
    assert "could not load the app's payload" in body["detail"]
