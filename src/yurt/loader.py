"""Finding an App class from ``path/to/file.py::ClassName``."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
import traceback
from pathlib import Path

from yurt.app import App
from yurt.errors import AppDefinitionError, AppLoadError


def load_app(target: str) -> type[App]:
    """Import the file of ``FILE[::Class]`` and return the App class (the only one if unnamed)."""
    file, _, class_name = target.partition("::")
    path = Path(file)
    if not path.is_file():
        raise AppDefinitionError(f"{target}: no such file {file!r}; use FILE.py::ClassName")
    module_name = "yurt_app_" + re.sub(r"\W", "_", path.stem)
    # The absolute path becomes the code's file name: tracebacks name it wherever they are
    # shown, and the payload (and its digest) is the same from any working directory.
    spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    if spec is None or spec.loader is None:
        raise AppDefinitionError(f"{target}: {file!r} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # Sibling modules of the app file import as they would when running it as a script.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise AppLoadError(import_failure(exc, file, path)) from exc
    apps = {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, App)
        and obj is not App
        and obj.__module__ == module_name
    }
    if class_name:
        if class_name not in apps:
            raise AppDefinitionError(
                f"{target}: no App class {class_name!r} in {file}; found {sorted(apps) or 'none'}"
            )
        return apps[class_name]
    if len(apps) != 1:
        raise AppDefinitionError(
            f"{target}: {file} defines {len(apps)} App classes ({sorted(apps)}); name one as "
            f"{file}::ClassName"
        )
    return next(iter(apps.values()))


def import_failure(exc: BaseException, file: str, path: Path) -> str:
    """One line for an exception raised importing the app file: ``file:line: Type: message``.

    The line is the SyntaxError's own, else the innermost frame of the user's code (the app file
    or a module beside it), so that an ImportError names the import that failed.
    """
    app_file = str(path.resolve())
    folder = path.resolve().parent
    where = file
    if isinstance(exc, SyntaxError) and exc.filename:
        where = _shown(exc.filename, app_file, file)
        if exc.lineno:
            where += f":{exc.lineno}"
        return f"{where}: {type(exc).__name__}: {exc.msg}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename).is_relative_to(folder):
            where = f"{_shown(frame.filename, app_file, file)}:{frame.lineno}"
            break
    if isinstance(exc, AppDefinitionError):
        return f"{where}: {exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


def _shown(filename: str, app_file: str, as_given: str) -> str:
    # The app file as the user typed it; a module beside it relative to the working directory.
    if filename == app_file:
        return as_given
    try:
        return os.path.relpath(filename)
    except ValueError:
        return filename
