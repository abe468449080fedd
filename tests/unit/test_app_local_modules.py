"""``local_python_modules`` is checked where the class is written, with the fix in the message."""

from __future__ import annotations

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
