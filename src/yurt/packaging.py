"""Payloads: an App class pickled by value, with a digest and the versions that built it.

Layout: ``MAGIC``, one line of JSON (the header), then the cloudpickle bytes. The header is
readable without unpickling anything, so a runner can refuse a payload from another Python
before executing a byte of it.

The pickle holds ``(App class, {file name: source})``: code objects keep their real file name
and the sources of the by-value modules travel along, so that a traceback on a runner shows
the user's file, line and text.

``sha256`` names the code: the digest of the pickle with what cloudpickle and pydantic make
differ from process to process taken out (``stable_digest``), so the same code gives the same
digest in any process and an unchanged ``yurt deploy`` is "unchanged". ``blob_sha256`` guards
the bytes themselves.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import linecache
import re
import site
import sys
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
from pydantic import BaseModel, ConfigDict

from yurt import __version__
from yurt.app import App, unpickling_apps
from yurt.errors import AppDefinitionError, PayloadError
from yurt.privatefs import create_private, private_dir

MAGIC = b"YURTPAYLOAD1\n"


class PayloadHeader(BaseModel):
    """What a payload says about itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    # None: a payload from before, whose sha256 is the blob's. Else the blob's own digest, and
    # what ``stable_digest`` takes out of the blob to give ``sha256``: a reader checks both.
    blob_sha256: str | None = None
    class_ids: list[str] = []
    by_value: list[str] = []
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
    """Pickle an App class; its module, modules beside it and its ``local_python_modules``
    (with their submodules) travel by value."""
    modules = by_value_modules(cls)
    listed = [m for m in local_modules(cls) if m not in modules]
    modules += listed
    carried = [*modules, *_submodules(listed)]
    sources = module_sources([*carried, sys.modules.get(cls.__module__)])
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=5).dump((cls, sources))
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
    blob = buffer.getvalue()
    names = sorted({m.__name__ for m in carried} | {cls.__module__})
    ids = _class_ids_in(blob)
    header = PayloadHeader(
        sha256=stable_digest(blob, ids, names),
        blob_sha256=hashlib.sha256(blob).hexdigest(),
        class_ids=ids,
        by_value=names,
        yurt=__version__,
        python=python_version(),
        cloudpickle=cloudpickle.__version__,
        class_name=cls.__qualname__,
        module=cls.__module__,
    )
    return MAGIC + header.model_dump_json().encode() + b"\n" + blob


def stable_digest(blob: bytes, class_ids: list[str], module_names: list[str]) -> str:
    """The digest of ``blob`` with what differs from process to process taken out. Pure.

    Two things in cloudpickle's bytes change with every process for the same code: the random
    id cloudpickle gives each class it pickles by value (uuid4 hex, so that a class unpickled
    twice in one process stays one class), and the ``id()`` in the schema refs pydantic keeps on
    a model class of these modules (``module.Model:140231...``). Both are replaced by
    placeholders; every other byte (code, constants, closures, sources) still counts. Since
    only 32 hex digits and a ref's digits can be masked so, a reader recomputing this digest
    knows the bytes are the code the digest names.
    """
    bad = [i for i in class_ids if not _CLASS_ID.fullmatch(i)]
    if bad:
        raise PayloadError(f"payload header: class id {bad[0][:40]!r} is not 32 hex digits")
    canonical = blob
    ordered = sorted({i.encode() for i in class_ids if i.encode() in blob}, key=blob.index)
    for n, tracker in enumerate(ordered):
        canonical = canonical.replace(tracker, b"<class %d>" % n)
    for name in sorted(set(module_names)):
        ref = re.compile(re.escape(name.encode()) + rb"\.[\w.<>\[\], ]*?:(\d+)")
        canonical = ref.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + b"<id>", canonical)
    return hashlib.sha256(canonical).hexdigest()


_CLASS_ID = re.compile(r"[0-9a-f]{32}")


def _class_ids_in(blob: bytes) -> list[str]:
    # Read from cloudpickle's own table of the ids it gave out; should a later cloudpickle move
    # it, payloads stay correct and only their digest stops being stable across processes.
    table = getattr(cloudpickle.cloudpickle, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", {})
    found = {v for v in list(table.values()) if isinstance(v, str) and _CLASS_ID.fullmatch(v)}
    return sorted((i for i in found if i.encode() in blob), key=lambda i: blob.index(i.encode()))


# What cloudpickle writes as every code object's file name (``_code_reduce``).
_ANONYMOUS_FILE = "<dynamic-code>"


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle's pickler, except that code objects keep their real ``co_filename``."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.CodeType):
            rebuild, args = self.dispatch_table[types.CodeType](obj)
            # Interned, as the sources' keys are: a code object compiled from source shares
            # its file name with the module's ``__file__``, one loaded from a .pyc has a copy,
            # and pickle's memo would write the two cases differently (another digest).
            real = sys.intern(obj.co_filename)
            return rebuild, tuple(
                real if isinstance(a, str) and a == _ANONYMOUS_FILE else a for a in args
            )
        return super().reducer_override(obj)


def module_sources(modules: list[ModuleType | None]) -> dict[str, str]:
    """``{file name: source}`` of the modules that have a Python source file, sorted by name."""
    out: dict[str, str] = {}
    for module in modules:
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.endswith(".py"):
            try:
                out[sys.intern(file)] = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # a traceback then shows the line number without its text
    return dict(sorted(out.items()))


def register_sources(sources: Mapping[str, str]) -> None:
    """Let ``linecache`` (hence tracebacks) show these files' lines where the files are absent.

    An entry with no modification time is never checked against the disk, so a runner shows
    the source its code was packed from even if a file of that name exists on it.
    """
    for file, text in sources.items():
        linecache.cache[file] = (len(text), None, text.splitlines(keepends=True), file)


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


def local_modules(cls: type) -> list[ModuleType]:
    """The modules the App names in ``local_python_modules``, imported.

    fal's setting: these travel by value although they are not beside the app file (a package
    at the repository's root that apps in a subfolder import), and so do their submodules.
    Raises ``AppDefinitionError`` for a name that does not import as a module from a file.
    """
    found = []
    for name in getattr(cls, "local_python_modules", None) or []:
        if not isinstance(name, str):
            continue  # build_spec refuses it with the rule
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise AppDefinitionError(
                f"{cls.__name__}: local_python_modules names {name!r}, which does not import "
                f"here ({type(exc).__name__}: {exc}); name a module or package importable "
                "where you deploy from (run from the folder that holds it, or add that folder "
                "to PYTHONPATH)"
            ) from exc
        if _is_yurt(module) or not isinstance(getattr(module, "__file__", None), str):
            raise AppDefinitionError(
                f"{cls.__name__}: local_python_modules names {name!r}, which is "
                f"{'yurt itself' if _is_yurt(module) else 'built into Python'}; "
                "list only your own modules and packages"
            )
        found.append(module)
    return found


def _submodules(modules: list[ModuleType]) -> list[ModuleType]:
    prefixes = tuple(m.__name__ + "." for m in modules)
    if not prefixes:
        return []
    return [
        m
        for name, m in list(sys.modules.items())
        if name.startswith(prefixes) and isinstance(m, ModuleType)
    ]


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
    expected, digest = header.blob_sha256, hashlib.sha256(blob).hexdigest()
    if expected is None:  # a payload from before the code digest: sha256 is the blob's
        expected = header.sha256
    elif digest == expected:
        expected, digest = header.sha256, stable_digest(blob, header.class_ids, header.by_value)
    if digest != expected:
        raise PayloadError(
            f"payload digest mismatch: header says {expected}, content is {digest}; "
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
            loaded = cloudpickle.loads(blob)
    except Exception as exc:
        raise PayloadError(
            f"cannot unpickle {header.class_name} from module {header.module}: {exc!r}; "
            "is every package it imports installed on the runner?"
        ) from exc
    # Payloads packed before sources travelled hold the bare class.
    cls, sources = loaded if isinstance(loaded, tuple) and len(loaded) == 2 else (loaded, {})
    if isinstance(sources, dict):
        register_sources(sources)
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise PayloadError(f"payload holds {cls!r}, not a yurt.App subclass")
    return header, cls


def write_payload(cls: type[App], directory: Path) -> tuple[PayloadHeader, Path]:
    """Pack ``cls`` into ``directory/<sha256>.yurt`` and return its header and path.

    The file is ``0600`` in a ``0700`` directory, as everything in a data dir: it is user code.
    """
    data = pack(cls)
    header, _ = read_header(data)
    private_dir(directory)
    path = directory / f"{header.sha256}.yurt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        create_private(tmp)
        tmp.write_bytes(data)
        tmp.replace(path)
    return header, path
