"""``local_python_modules`` is checked where the class is written, with the fix in the message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import yurt
from yurt.errors import AppDefinitionError


def _app(**settings: Any) -> type[yurt.App]:
    class Mods(yurt.App, **settings):
        @yurt.endpoint("/")
        def run(self) -> None:
            pass

    return Mods


def test_an_importable_module_is_accepted_and_described() -> None:
    """Importable names pass and appear in the spec, in the order given."""
    cls = _app(local_python_modules=["json", "email.mime"])
    assert yurt.build_spec(cls).local_python_modules == ["json", "email.mime"]


def test_a_name_that_does_not_import_is_refused() -> None:
    """A module that does not import here is an AppDefinitionError saying how to make it."""
    with pytest.raises(AppDefinitionError, match=r"'no_such_pkg_xyz'.*PYTHONPATH"):
        _app(local_python_modules=["no_such_pkg_xyz"])


def test_an_attribute_is_not_a_module() -> None:
    """A function's dotted name (json.dumps) is not a module: refused."""
    with pytest.raises(AppDefinitionError, match=r"'json\.dumps', which does not import"):
        _app(local_python_modules=["json.dumps"])


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("json", "must be a list of module names"),
        ([1], "must be a list of module names"),
        (["my_pkg/sub.py"], "is not a module name; write it as in an import statement"),
        (["a..b"], "is not a module name"),
    ],
)
def test_a_list_of_module_names_is_required(value: Any, rule: str) -> None:
    """A bare string, a non-string or a path is refused with the expected shape."""
    with pytest.raises(AppDefinitionError, match=rule):
        _app(local_python_modules=value)


@pytest.mark.parametrize(("name", "why"), [("yurt.app", "yurt itself"), ("sys", "built into")])
def test_yurt_and_builtin_modules_are_refused(name: str, why: str) -> None:
    """yurt and modules built into Python cannot travel by value: refused, naming why."""
    with pytest.raises(AppDefinitionError, match=why):
        _app(local_python_modules=[name])


# Packs FILE::Class in a fresh interpreter (the repo on its path) and prints the digest.
PACK = (
    "import sys; from yurt.loader import load_app; from yurt.packaging import pack, read_header; "
)
PACK += "print(read_header(pack(load_app(sys.argv[1])))[0].sha256)"


def _digest(repo: Path, hash_seed: str) -> str:
    path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-c", PACK, "apps/words_app.py::Words"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_digest_is_stable_and_follows_the_listed_package(tmp_path: Path) -> None:
    """One digest in two processes; a change in the listed package's submodule changes it."""
    (tmp_path / "wordpkg").mkdir()
    (tmp_path / "wordpkg" / "__init__.py").write_text("")
    sub = tmp_path / "wordpkg" / "models.py"
    sub.write_text("from pydantic import BaseModel\n\nclass Said(BaseModel):\n    text: str\n")
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "words_app.py").write_text(
        "import yurt\nfrom wordpkg.models import Said\n\n"
        "class Words(yurt.App, local_python_modules=['wordpkg']):\n"
        "    @yurt.endpoint('/')\n    def run(self) -> Said:\n        return Said(text='a')\n"
    )
    first = _digest(tmp_path, "1")
    assert _digest(tmp_path, "2") == first
    sub.write_text(sub.read_text() + "    extra: int = 0\n")
    assert _digest(tmp_path, "1") != first
