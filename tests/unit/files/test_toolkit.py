"""``yurt.toolkit`` as fal apps use it: the JSON of files, repositories, local reads, caches."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

import yurt
from yurt.files.location import location_env
from yurt.toolkit import (
    DownloadError,
    File,
    FileUploadException,
    Image,
    ImageSize,
    ImageSizeInput,
    KVStore,
    clone_repository,
    download_file,
    get_image_size,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runner's view of a store whose router is unreachable: reads must not use HTTP."""
    for name, value in location_env(tmp_path / "files", "http://127.0.0.1:9", 600.0).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("YURT_APP_DATA_DIR", str(tmp_path / "appdata"))
    return tmp_path / "files"


class Output(BaseModel):
    file: File


def test_file_json_is_fals(store: Path) -> None:
    """A File serialises to url, content_type, file_name and file_size; its bytes stay out."""
    out = Output(file=File.from_bytes(b"abc", file_name="a.txt"))
    dumped = out.model_dump()["file"]
    assert dumped == {
        "url": dumped["url"],
        "content_type": "text/plain",
        "file_name": "a.txt",
        "file_size": 3,
    }
    assert dumped["url"].startswith("http://127.0.0.1:9/files/")
    assert out.file.as_bytes() == b"abc"


def test_file_fields_take_a_url_string_or_the_object() -> None:
    """An input typed File takes a bare http(s)/data URL or fal's object; other schemes fail."""
    assert Output.model_validate({"file": "https://x/y.png"}).file.url == "https://x/y.png"
    assert Output.model_validate({"file": {"url": "data:,hi"}}).file.url == "data:,hi"
    with pytest.raises(ValueError, match="valid URL"):
        Output.model_validate({"file": "file:///etc/passwd"})


def test_in_memory_gives_a_data_uri_and_no_store_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """repository='in_memory' returns a data: URI, as fal's does, with no store at all."""
    monkeypatch.delenv("YURT_FILES_URL", raising=False)
    image = Image.from_bytes(
        b"\x89PNG", "png", ImageSize(width=1, height=2), repository="in_memory"
    )
    assert image.url == "data:image/png;base64," + base64.b64encode(b"\x89PNG").decode()
    assert (image.width, image.height) == (1, 2)
    with pytest.raises(FileUploadException, match="in_memory"):
        File.from_bytes(b"x")


def test_fal_buckets_are_refused_with_the_fix(store: Path) -> None:
    """fal's own cloud buckets name the fix; fal's CDN names all mean yurt's store."""
    with pytest.raises(ValueError, match="leave repository out"):
        File.from_bytes(b"x", repository="r2")
    for repo in ("cdn", "fal", "fal_v2", "fal_v3"):
        assert File.from_bytes(b"x", repository=repo).url.startswith("http://127.0.0.1:9/")


def test_download_file_reads_its_own_store_without_http(store: Path, tmp_path: Path) -> None:
    """A URL of the runner's own store is copied from disk: its router here is unreachable."""
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"v" * 5000)
    url = File.from_path(source).url
    got = download_file(url, "inputs")
    assert got == tmp_path / "appdata" / "inputs" / "clip.mp4"
    assert got.read_bytes() == source.read_bytes()
    with pytest.raises(DownloadError, match="expired"):
        download_file(url.replace(url.split("/")[-2], "Z" * 32), tmp_path)


def test_download_file_decodes_data_uris(tmp_path: Path) -> None:
    """A data: URI is written out as its bytes."""
    got = download_file("data:text/plain;base64," + base64.b64encode(b"hi").decode(), tmp_path)
    assert got.read_bytes() == b"hi"


def test_image_sizes() -> None:
    """Preset names stand for fal's sizes; an ImageSize is itself; anything else is refused."""

    class Ask(BaseModel):
        image_size: ImageSizeInput = "square_hd"

    assert get_image_size(Ask().image_size) == ImageSize(width=1024, height=1024)
    assert get_image_size(Ask(image_size="portrait_16_9").image_size).height == 1024
    assert get_image_size(ImageSize(width=3, height=4)) == ImageSize(width=3, height=4)
    with pytest.raises(TypeError):
        get_image_size("huge")  # type: ignore[arg-type]


def test_kv_store_sets_gets_and_deletes(tmp_path: Path) -> None:
    """Values live per db_name; a bad ttl names the bounds."""
    kv = KVStore("cache", tmp_path / "kv.sqlite3")
    assert kv.get("k") is None
    kv.set("k", "v")
    assert kv.get("k") == "v"
    assert KVStore("other", tmp_path / "kv.sqlite3").get("k") is None
    kv.delete("k")
    assert kv.get("k") is None
    with pytest.raises(Exception, match="between 60"):
        kv.set("k", "v", ttl=1)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_clone_repository_pins_a_commit_and_reuses_the_clone(tmp_path: Path) -> None:
    """A clone is checked out at the commit asked for, and found again, not cloned again."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", cwd=origin)
    for text in ("one", "two"):
        (origin / "v.txt").write_text(text)
        git("add", "v.txt", cwd=origin)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", text, cwd=origin)
    first = git("rev-list", "--max-parents=0", "HEAD", cwd=origin)
    path = clone_repository(str(origin), commit_hash=first, target_dir=tmp_path / "repos")
    assert path.name == f"origin-{first[:8]}"
    assert (path / "v.txt").read_text() == "one"
    (path / "marker").write_text("kept")
    again = clone_repository(str(origin), commit_hash=first, target_dir=tmp_path / "repos")
    assert again == path and (again / "marker").exists()


def test_toolkit_imports_neither_pillow_nor_numpy() -> None:
    """Importing the toolkit (as every runner of a fal app does) loads no Pillow or numpy."""
    code = (
        "import sys, yurt as fal; fal.toolkit.Image; "
        "print(sorted({'PIL', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert yurt.toolkit.File is File
