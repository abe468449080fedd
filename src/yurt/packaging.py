"""Payloads: an App class pickled by value, with a digest and the versions that built it.

Layout: ``MAGIC``, one line of JSON (the header), then the cloudpickle bytes. The header is
readable without unpickling anything, so a runner can refuse a payload from another Python
before executing a byte of it.
"""

from __future__ import annotations

import hashlib
import json
import site
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
from pydantic import BaseModel, ConfigDict

from yurt import __version__
from yurt.app import App, unpickling_apps
from yurt.errors import PayloadError

MAGIC = b"YURTPAYLOAD1\n"


class PayloadHeader(BaseModel):
    """What a payload says about itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    yurt: str
    python: str
    cloudpickle: str
    class_name: str
    module: str

    @property
    def revision(self) -> str:
        """A short, stable revision id: the first 12 hex digits of the digest."""
        return self.sha256[:12]


def python_version() -> str:
    """This interpreter's major.minor, as payloads record it."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pack(cls: type[App]) -> bytes:
    """Pickle an App class; its module, and modules beside it, travel by value."""
    modules = by_value_modules(cls)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        blob: bytes = cloudpickle.dumps(cls, protocol=5)
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
    header = PayloadHeader(
        sha256=hashlib.sha256(blob).hexdigest(),
        yurt=__version__,
        python=python_version(),
        cloudpickle=cloudpickle.__version__,
        class_name=cls.__qualname__,
        module=cls.__module__,
    )
    return MAGIC + header.model_dump_json().encode() + b"\n" + blob


def _is_yurt(module: Any) -> bool:
    name = getattr(module, "__name__", "")
    return bool(name == "yurt" or name.startswith("yurt."))


def by_value_modules(cls: type) -> list[ModuleType]:
    """The App's module and the top-level modules imported from its folder (or below it).

    A runner has the installed packages but not the user's files, so ``from helpers import x``
    beside the app must travel in the payload too. Installed packages never do.
    """
    home = sys.modules.get(cls.__module__)
    home_file = getattr(home, "__file__", None)
    if home is None or home_file is None:
        return []  # e.g. a class typed into a REPL: cloudpickle takes __main__ by value anyway
    folder = Path(home_file).resolve().parent
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    installed |= {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    found = [] if home.__name__ == "__main__" or _is_yurt(home) else [home]
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if "." in name or module is home or file is None or _is_yurt(module):
            continue
        path = Path(file).resolve()
        if path.is_relative_to(folder) and not any(path.is_relative_to(p) for p in installed):
            found.append(module)
    return found


def read_header(data: bytes) -> tuple[PayloadHeader, bytes]:
    """Split a payload into its header and pickle bytes; checks the format and the digest."""
    if not data.startswith(MAGIC):
        raise PayloadError("not a yurt payload (bad magic bytes); rebuild it with yurt")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise PayloadError("truncated yurt payload (no header line); rebuild it")
    try:
        header = PayloadHeader.model_validate(json.loads(data[len(MAGIC) : end]))
    except ValueError as exc:
        raise PayloadError(f"corrupt yurt payload header: {exc}") from exc
    blob = data[end + 1 :]
    digest = hashlib.sha256(blob).hexdigest()
    if digest != header.sha256:
        raise PayloadError(
            f"payload digest mismatch: header says {header.sha256}, content is {digest}; "
            "the payload was corrupted or altered, rebuild and upload it again"
        )
    return header, blob


def unpack(data: bytes) -> tuple[PayloadHeader, type[App]]:
    """Load an App class from payload bytes, refusing a payload built by another Python."""
    header, blob = read_header(data)
    if header.python != python_version():
        raise PayloadError(
            f"payload was built with Python {header.python} but this runner runs Python "
            f"{python_version()}; pickled code only loads on the same Python minor version: "
            f"run the runner with Python {header.python} or build the payload with "
            f"Python {python_version()}"
        )
    if header.cloudpickle != cloudpickle.__version__:
        warnings.warn(
            f"payload built with cloudpickle {header.cloudpickle}, loading with "
            f"{cloudpickle.__version__}",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        with unpickling_apps():
            cls = cloudpickle.loads(blob)
    except Exception as exc:
        raise PayloadError(
            f"cannot unpickle {header.class_name} from module {header.module}: {exc!r}; "
            "is every package it imports installed on the runner?"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise PayloadError(f"payload holds {cls!r}, not a yurt.App subclass")
    return header, cls


def write_payload(cls: type[App], directory: Path) -> tuple[PayloadHeader, Path]:
    """Pack ``cls`` into ``directory/<sha256>.yurt`` and return its header and path."""
    data = pack(cls)
    header, _ = read_header(data)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{header.sha256}.yurt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return header, path
