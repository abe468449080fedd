"""Tests for ``yurt.loader.load_app``: finding an App class from ``FILE[::Class]``."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

import yurt
from yurt.errors import AppLoadError
from yurt.loader import load_app

APP = """
class {name}(yurt.App):
    @yurt.endpoint("/")
    def run(self) -> None:
        return None
"""


def write_module(directory: Path, stem: str, *class_names: str, extra: str = "") -> Path:
    """Write ``stem.py`` defining an App class for each of ``class_names``."""
    body = "import yurt\n" + extra + "".join(APP.format(name=n) for n in class_names)
    path = directory / f"{stem}.py"
    path.write_text(textwrap.dedent(body))
    return path


pytestmark = pytest.mark.usefixtures("isolated_imports")


def test_file_and_class(tmp_path: Path) -> None:
    """FILE::Class returns that class from the file."""
    path = write_module(tmp_path, "two_apps", "First", "Second")
    cls = load_app(f"{path}::Second")
    assert issubclass(cls, yurt.App)
    assert cls.__name__ == "Second"
    assert cls.__module__ == "yurt_app_two_apps"


def test_file_alone_with_one_app(tmp_path: Path) -> None:
    """FILE alone returns the file's only App class."""
    path = write_module(tmp_path, "one_app", "Only")
    assert load_app(str(path)).__name__ == "Only"


def test_file_alone_ignores_imported_apps(tmp_path: Path) -> None:
    """App classes imported into the file do not count as the file's own."""
    write_module(tmp_path, "yurt_sibling_base", "Imported")
    path = write_module(tmp_path, "imports_one", "Own", extra="from yurt_sibling_base import *\n")
    cls = load_app(str(path))
    assert cls.__name__ == "Own"
    module = sys.modules[cls.__module__]
    assert module.Imported.__name__ == "Imported"


def test_sibling_modules_are_importable(tmp_path: Path) -> None:
    """The app file imports modules next to it, as it would when run as a script."""
    (tmp_path / "yurt_sibling_helpers.py").write_text("GREETING = 'hi'\n")
    path = write_module(
        tmp_path, "uses_sibling", "Greeter", extra="from yurt_sibling_helpers import GREETING\n"
    )
    cls = load_app(str(path))
    assert sys.modules[cls.__module__].GREETING == "hi"


def test_file_with_two_apps_and_no_class(tmp_path: Path) -> None:
    """FILE with two App classes and no ::Class fails listing both and how to pick one."""
    path = write_module(tmp_path, "two_apps", "First", "Second")
    with pytest.raises(yurt.AppDefinitionError) as info:
        load_app(str(path))
    message = str(info.value)
    assert "2 App classes" in message
    assert "['First', 'Second']" in message
    assert "::ClassName" in message


def test_file_with_no_app(tmp_path: Path) -> None:
    """FILE without any App class fails saying it found none."""
    path = write_module(tmp_path, "no_apps")
    with pytest.raises(yurt.AppDefinitionError, match="defines 0 App classes"):
        load_app(str(path))


@pytest.mark.parametrize("suffix", ["", "::Echo"])
def test_missing_file(tmp_path: Path, suffix: str) -> None:
    """A file that does not exist fails naming it and the expected form."""
    missing = tmp_path / "missing.py"
    with pytest.raises(yurt.AppDefinitionError) as info:
        load_app(f"{missing}{suffix}")
    assert repr(str(missing)) in str(info.value)
    assert "FILE.py::ClassName" in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    """A directory is refused as a missing file."""
    with pytest.raises(yurt.AppDefinitionError, match="no such file"):
        load_app(str(tmp_path))


def test_missing_class(tmp_path: Path) -> None:
    """FILE::Class with no such class fails listing the classes that are there."""
    path = write_module(tmp_path, "two_apps", "First", "Second")
    with pytest.raises(yurt.AppDefinitionError) as info:
        load_app(f"{path}::Third")
    message = str(info.value)
    assert "'Third'" in message
    assert "['First', 'Second']" in message


def test_class_that_is_not_an_app(tmp_path: Path) -> None:
    """FILE::Class naming a plain class is refused like a missing one."""
    path = write_module(tmp_path, "plain", "Echo", extra="class Helper:\n    pass\n")
    with pytest.raises(yurt.AppDefinitionError, match="no App class 'Helper'"):
        load_app(f"{path}::Helper")


def test_invalid_app_in_file_raises_definition_error(tmp_path: Path) -> None:
    """An invalid App class in the file surfaces as AppDefinitionError from load_app."""
    path = tmp_path / "broken.py"
    path.write_text("import yurt\n\nclass Broken(yurt.App, max_concurrency=0):\n    pass\n")
    with pytest.raises(yurt.AppDefinitionError, match="Broken"):
        load_app(str(path))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import yurt\n\nclass A(yurt.App):\n    x = (\n", "{file}:4: SyntaxError: "),
        ("import yurt\n  x = 1\n", "{file}:2: IndentationError: unexpected indent"),
        (
            "import yurt\nimport yurt_sibling_nowhere_at_all\n",
            "{file}:2: ModuleNotFoundError: No module named 'yurt_sibling_nowhere_at_all'",
        ),
        ("import yurt\n\n\nraise ValueError('bad config')\n", "{file}:4: ValueError: bad config"),
    ],
    ids=["syntax", "indentation", "import", "raise"],
)
def test_import_failure_is_one_line_naming_file_and_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    """A file that fails to import raises AppLoadError: ``file:line: Type: message``."""
    path = tmp_path / "bad_app.py"
    path.write_text(source)
    with pytest.raises(AppLoadError) as info:
        load_app(f"{path}::A")
    message = str(info.value)
    assert message.startswith(expected.format(file=path))
    assert "\n" not in message
    assert info.value.__cause__ is not None


def test_import_failure_in_a_sibling_names_the_sibling(tmp_path: Path) -> None:
    """An exception raised in a module beside the app names that module's line."""
    (tmp_path / "yurt_sibling_cfg.py").write_text("x = 1\nraise KeyError('MODEL')\n")
    path = tmp_path / "app_with_sibling.py"
    path.write_text("import yurt\nimport yurt_sibling_cfg\n")
    with pytest.raises(AppLoadError, match=r"yurt_sibling_cfg\.py:2: KeyError: 'MODEL'"):
        load_app(str(path))


def test_invalid_app_class_names_its_line(tmp_path: Path) -> None:
    """An App refused at class creation is reported at the line of its class statement."""
    path = tmp_path / "broken.py"
    path.write_text("import yurt\n\nclass Broken(yurt.App, max_concurrency=0):\n    pass\n")
    with pytest.raises(
        yurt.AppDefinitionError, match=rf"^{re.escape(str(path))}:3: Broken has no endpoints"
    ):
        load_app(str(path))
