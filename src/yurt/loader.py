"""Finding an App class from ``path/to/file.py::ClassName``."""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path

from yurt.app import App
from yurt.errors import AppDefinitionError


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
    spec.loader.exec_module(module)
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
