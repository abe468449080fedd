"""Tests for ``yurt.packaging``: App payloads, their header and the checks made on loading."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import yurt
from yurt.loader import load_app
from yurt.packaging import (
    MAGIC,
    PayloadHeader,
    pack,
    python_version,
    read_header,
    unpack,
    write_payload,
)

APP_SOURCE = textwrap.dedent(
    """
    from __future__ import annotations

    from pydantic import BaseModel, Field

    import yurt

    PREFIX = "echo: "


    def shout(text: str) -> str:
        return text.upper()


    class In(BaseModel):
        text: str = Field(description="what to echo")


    class Out(BaseModel):
        text: str
        calls: int


    class Echo(yurt.App, keep_alive=7):
        def setup(self) -> None:
            self.calls = 0

        @yurt.endpoint("/")
        def run(self, req: In) -> Out:
            self.calls += 1
            return Out(text=PREFIX + shout(req.text), calls=self.calls)
    """
)

# Runs in a fresh interpreter where the app's module cannot be imported.
RUNNER_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    from pathlib import Path

    import yurt
    from yurt.packaging import unpack

    header, cls = unpack(Path(sys.argv[1]).read_bytes())
    assert importlib.util.find_spec(header.module) is None, "module is importable"
    spec = yurt.build_spec(cls)
    app = cls()
    app.setup()
    body = cls.run.__annotations__["req"](text="hi")
    app.run(body)
    out = app.run(body)
    print(json.dumps({"out": out.model_dump(), "keep_alive": spec.keep_alive,
                      "class_name": cls.__name__, "module": header.module}))
    """
)


@pytest.fixture
def echo_cls(tmp_path: Path, isolated_imports: None) -> type[yurt.App]:
    """The Echo App, loaded from a file outside any importable package."""
    app_dir = tmp_path / "app_src"
    app_dir.mkdir()
    (app_dir / "echo_payload_app.py").write_text(APP_SOURCE)
    return load_app(f"{app_dir / 'echo_payload_app.py'}::Echo")


@pytest.fixture
def payload(echo_cls: type[yurt.App]) -> bytes:
    """Echo packed into payload bytes."""
    return pack(echo_cls)


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header JSON and pickle bytes of a payload, without any checks."""
    end = data.index(b"\n", len(MAGIC))
    return json.loads(data[len(MAGIC) : end]), data[end + 1 :]


def join(header: dict[str, Any], blob: bytes) -> bytes:
    """A payload from a header dict and pickle bytes (no digest recomputed)."""
    return MAGIC + json.dumps(header).encode() + b"\n" + blob


def test_round_trip_in_a_fresh_interpreter(echo_cls: type[yurt.App], tmp_path: Path) -> None:
    """A payload loads and serves where the defining module is not importable (by value)."""
    _, path = write_payload(echo_cls, tmp_path / "payloads")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER_SCRIPT, str(path)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "out": {"text": "echo: HI", "calls": 2},
        "keep_alive": 7.0,
        "class_name": "Echo",
        "module": "yurt_app_echo_payload_app",
    }


def test_round_trip_in_process(payload: bytes) -> None:
    """unpack gives an App class whose endpoint works, created without re-validation."""
    header, cls = unpack(payload)
    assert issubclass(cls, yurt.App)
    app = cls()
    app.setup()
    body = cls.run.__annotations__["req"](text="x")  # type: ignore[attr-defined]
    assert app.run(body).text == "echo: X"  # type: ignore[attr-defined]
    assert header.class_name == "Echo"


def test_pack_leaves_no_by_value_registration(echo_cls: type[yurt.App]) -> None:
    """pack registers the module for pickling by value only while it pickles."""
    pack(echo_cls)
    assert echo_cls.__module__ not in cloudpickle.list_registry_pickle_by_value()


def test_header_fields(payload: bytes, echo_cls: type[yurt.App]) -> None:
    """The header records the digests, yurt, Python major.minor and cloudpickle versions."""
    header, blob = read_header(payload)
    assert payload.startswith(MAGIC)
    assert header.blob_sha256 == hashlib.sha256(blob).hexdigest()
    assert header.yurt == yurt.__version__
    assert header.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert header.python == python_version()
    assert header.cloudpickle == cloudpickle.__version__
    assert (header.class_name, header.module) == ("Echo", echo_cls.__module__)
    assert header.revision == header.sha256[:12]


def test_header_is_readable_json(payload: bytes) -> None:
    """The header is one line of JSON with exactly the documented keys."""
    header, _ = split(payload)
    assert set(header) == set(PayloadHeader.model_fields)


def test_tampered_pickle_is_refused(payload: bytes) -> None:
    """Altered pickle bytes fail the digest check with a PayloadError naming the digest."""
    tampered = payload[:-1] + bytes([payload[-1] ^ 0xFF])
    with pytest.raises(yurt.PayloadError, match="digest mismatch") as info:
        unpack(tampered)
    assert "rebuild" in str(info.value)


def test_other_code_under_the_same_digest_is_refused(payload: bytes) -> None:
    """Bytes altered with a matching blob_sha256 still fail: the code digest is recomputed."""
    header, blob = split(payload)
    altered = blob.replace(b"echo: ", b"evil: ")
    assert altered != blob
    header["blob_sha256"] = hashlib.sha256(altered).hexdigest()
    with pytest.raises(yurt.PayloadError, match="digest mismatch"):
        unpack(join(header, altered))


def test_class_ids_that_are_not_hex_are_refused(payload: bytes) -> None:
    """A header's class ids may mask only cloudpickle's 32-hex-digit ids, nothing else."""
    header, blob = split(payload)
    header["class_ids"] = [*header["class_ids"], "echo: "]
    with pytest.raises(yurt.PayloadError, match="not 32 hex digits"):
        unpack(join(header, blob))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"NOTAPAYLOAD\n{}\n", "bad magic"),
        (b"", "bad magic"),
        (MAGIC + b'{"sha256": "x"}', "truncated"),
        (MAGIC + b"{not json\n", "corrupt yurt payload header"),
        (MAGIC + b'{"sha256": "x"}\n', "corrupt yurt payload header"),
        (MAGIC + b"[]\n", "corrupt yurt payload header"),
    ],
    ids=["bad-magic", "empty", "no-header-line", "header-not-json", "header-fields", "not-obj"],
)
def test_malformed_payload_is_refused(data: bytes, match: str) -> None:
    """A payload with bad magic, no header line or a corrupt header raises PayloadError."""
    with pytest.raises(yurt.PayloadError, match=match):
        unpack(data)


def test_other_python_minor_is_refused(payload: bytes) -> None:
    """A payload claiming another Python minor fails naming both versions, before unpickling."""
    header, blob = split(payload)
    other = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    header["python"] = other
    with pytest.raises(yurt.PayloadError) as info:
        unpack(join(header, blob))
    message = str(info.value)
    assert f"Python {other}" in message
    assert f"Python {python_version()}" in message


def test_other_cloudpickle_warns_but_loads(payload: bytes) -> None:
    """A payload from another cloudpickle version loads with a RuntimeWarning."""
    header, blob = split(payload)
    header["cloudpickle"] = "0.0.1"
    with pytest.warns(RuntimeWarning, match=r"cloudpickle 0\.0\.1"):
        _, cls = unpack(join(header, blob))
    assert cls.__name__ == "Echo"


def _payload_of(blob: bytes) -> bytes:
    header = {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "yurt": yurt.__version__,
        "python": python_version(),
        "cloudpickle": cloudpickle.__version__,
        "class_name": "Echo",
        "module": "nowhere",
    }
    return join(header, blob)


def test_payload_of_a_non_app_is_refused() -> None:
    """A well-formed payload holding something other than an App class is refused."""
    with pytest.raises(yurt.PayloadError, match=r"not a yurt\.App subclass"):
        unpack(_payload_of(cloudpickle.dumps(42)))


def test_unpicklable_payload_is_refused() -> None:
    """Pickle bytes that fail to load raise PayloadError naming the class and module."""
    with pytest.raises(yurt.PayloadError, match="cannot unpickle Echo from module nowhere"):
        unpack(_payload_of(b"\x80\x05garbage"))


def test_write_payload_names_the_file_by_digest(echo_cls: type[yurt.App], tmp_path: Path) -> None:
    """write_payload writes ``<sha256>.yurt`` (creating the directory) holding the payload."""
    directory = tmp_path / "a" / "b"
    header, path = write_payload(echo_cls, directory)
    assert path == directory / f"{header.sha256}.yurt"
    assert read_header(path.read_bytes())[0] == header


def test_write_payload_is_idempotent(echo_cls: type[yurt.App], tmp_path: Path) -> None:
    """Writing the same App twice gives the same header and file, and leaves one file."""
    directory = tmp_path / "payloads"
    first = write_payload(echo_cls, directory)
    content = first[1].read_bytes()
    second = write_payload(echo_cls, directory)
    assert second == first
    assert first[1].read_bytes() == content
    assert [p.name for p in directory.iterdir()] == [first[1].name]


# Packs FILE::Class in a fresh interpreter and prints the payload's digest.
PACK_SCRIPT = textwrap.dedent(
    """
    import sys
    from yurt.loader import load_app
    from yurt.packaging import pack, read_header

    print(read_header(pack(load_app(sys.argv[1])))[0].sha256)
    """
)


def _digest_in_a_fresh_process(target: str, cwd: Path, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    # Bytecode is written, so a later process loads the app from its .pyc, as a second
    # ``yurt deploy`` of an unchanged file does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", PACK_SCRIPT, target],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_digest_is_the_same_in_two_processes(tmp_path: Path) -> None:
    """The same file packed by two processes (other hash seeds, other cwd) has one digest."""
    app_dir = tmp_path / "app_src"
    app_dir.mkdir()
    (app_dir / "echo_payload_app.py").write_text(APP_SOURCE)
    first = _digest_in_a_fresh_process("app_src/echo_payload_app.py::Echo", tmp_path, "1")
    second = _digest_in_a_fresh_process("echo_payload_app.py::Echo", app_dir, "2")
    assert len(first) == 64
    assert first == second


def test_digest_is_the_same_when_the_module_comes_from_its_pyc(tmp_path: Path) -> None:
    """A module compiled from source and the same module loaded from its .pyc share a digest."""
    (tmp_path / "echo_payload_app.py").write_text(APP_SOURCE)
    compiled = _digest_in_a_fresh_process("echo_payload_app.py::Echo", tmp_path, "1")
    assert list((tmp_path / "__pycache__").glob("echo_payload_app.*.pyc"))
    assert _digest_in_a_fresh_process("echo_payload_app.py::Echo", tmp_path, "1") == compiled


def test_digest_changes_with_the_code(tmp_path: Path) -> None:
    """Changing one line of the app's source gives another digest."""
    app = tmp_path / "echo_payload_app.py"
    app.write_text(APP_SOURCE)
    before = _digest_in_a_fresh_process(f"{app}::Echo", tmp_path, "1")
    app.write_text(APP_SOURCE.replace('PREFIX = "echo: "', 'PREFIX = "echo! "'))
    assert _digest_in_a_fresh_process(f"{app}::Echo", tmp_path, "1") != before


def test_digest_changes_with_a_sibling_module(tmp_path: Path) -> None:
    """A change in a module imported from beside the app changes the digest too."""
    (tmp_path / "yurt_sibling_words.py").write_text("WORD = 'a'\n")
    app = tmp_path / "echo_payload_app.py"
    app.write_text(APP_SOURCE.replace("import yurt\n", "import yurt\nimport yurt_sibling_words\n"))
    before = _digest_in_a_fresh_process(f"{app}::Echo", tmp_path, "1")
    (tmp_path / "yurt_sibling_words.py").write_text("WORD = 'b'\n")
    assert _digest_in_a_fresh_process(f"{app}::Echo", tmp_path, "1") != before


FACTORY_SOURCE = textwrap.dedent(
    """
    import yurt


    def make(word: str) -> type[yurt.App]:
        class Echo(yurt.App):
            @yurt.endpoint("/")
            def run(self) -> dict[str, str]:
                return {"word": word}

        return Echo


    First = make("first")
    Second = make("second")
    """
)


def test_same_source_other_closure_is_another_digest(tmp_path: Path) -> None:
    """Two Apps from one source and spec that differ only in a closure's value differ in digest."""
    (tmp_path / "factory_app.py").write_text(FACTORY_SOURCE)
    first = _digest_in_a_fresh_process("factory_app.py::First", tmp_path, "1")
    second = _digest_in_a_fresh_process("factory_app.py::Second", tmp_path, "1")
    assert first != second
    assert first == _digest_in_a_fresh_process("factory_app.py::First", tmp_path, "2")


FAILING_SETUP = textwrap.dedent(
    """
    import yurt


    def load_weights():
        raise RuntimeError("no weights here")


    class Broken(yurt.App):
        def setup(self) -> None:
            load_weights()

        @yurt.endpoint("/")
        def run(self) -> None:
            pass
    """
)

# Loads a payload, runs setup(), prints the traceback it raised.
SETUP_SCRIPT = textwrap.dedent(
    """
    import sys, traceback
    from pathlib import Path
    from yurt.packaging import unpack

    header, cls = unpack(Path(sys.argv[1]).read_bytes())
    try:
        cls().setup()
    except RuntimeError:
        traceback.print_exc(file=sys.stdout)
    """
)


def test_traceback_on_a_runner_shows_the_users_file_and_line(
    tmp_path: Path, isolated_imports: None
) -> None:
    """A setup() failure where the app file is absent shows its file, line and source text."""
    app = tmp_path / "broken_app.py"
    app.write_text(FAILING_SETUP)
    _, path = write_payload(load_app(f"{app}::Broken"), tmp_path / "payloads")
    app.unlink()  # as on a runner of another machine: only the payload is there
    proc = subprocess.run(
        [sys.executable, "-c", SETUP_SCRIPT, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "<dynamic-code>" not in proc.stdout
    assert f'File "{app}", line 11, in setup\n    load_weights()' in proc.stdout
    assert f'File "{app}", line 6, in load_weights\n    raise RuntimeError' in proc.stdout


def test_payload_without_sources_still_loads() -> None:
    """A payload from before sources travelled (the bare class, digest of the bytes) loads."""
    from yurt.app import App

    class Bare(App):
        @yurt.endpoint("/")
        def run(self) -> None:
            pass

    header, cls = unpack(_payload_of(cloudpickle.dumps(Bare)))
    assert cls.__name__ == "Bare" and header.blob_sha256 is None
