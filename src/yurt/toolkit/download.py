"""Downloads into the app's persistent data directory: ``download_file``,
``download_model_weights`` and ``clone_repository``, with fal's signatures.

The persistent directory is the app's data directory (``YURT_APP_DATA_DIR``; fal's ``/data``
when there is none). Weights and repositories are cached under ``.fal/`` in it, as fal lays
them out, so every runner of the app finds what one of them fetched. A cache entry is made
under a file lock (``flock``), so runners that start together fetch it once; an interrupted
weights download is resumed with a ``Range`` request.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path, PurePath
from typing import IO
from urllib.parse import unquote, urlparse

from yurt.appdata import APP_DATA_ENV
from yurt.files.location import from_environ
from yurt.files.store import CHUNK, FileStore, clean_name
from yurt.toolkit.errors import DownloadError

MB = 1024 * 1024
# Marks a weights directory whose file arrived whole.
COMPLETE = ".fal_complete"
PARTIAL = ".fal_partial"


def persistent_dir() -> PurePath:
    """The app's data directory (``YURT_APP_DATA_DIR``), else fal's ``/data``."""
    return PurePath(os.environ.get(APP_DATA_ENV) or "/data")


FAL_PERSISTENT_DIR = persistent_dir()
FAL_REPOSITORY_DIR = FAL_PERSISTENT_DIR / ".fal" / "repos"
FAL_MODEL_WEIGHTS_DIR = PurePath(
    os.environ.get("FAL_MODEL_WEIGHTS_DIR") or FAL_PERSISTENT_DIR / ".fal" / "model_weights"
)


def _hash_url(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made if missing): one holder on this machine,
    and on a shared volume whose file system honours it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open(url: str, headers: dict[str, str]) -> IO[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "yurt", **headers})
    try:
        resp: IO[bytes] = urllib.request.urlopen(request, timeout=60)
        return resp
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"Failed to download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise DownloadError(f"Failed to download {url}: {exc}") from exc


def _name_from(url: str, headers: Message | None) -> str:
    if headers is not None:
        disposition = Message()
        disposition["content-disposition"] = headers.get("content-disposition", "")
        if name := disposition.get_filename():
            return clean_name(name)
    return clean_name(unquote(Path(urlparse(url).path).name), _hash_url(url))


def _copy(src: IO[bytes], dst: IO[bytes], limit: int | None, url: str) -> int:
    size = 0
    try:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                raise DownloadError(f"{url} is larger than the limit of {limit // MB} MB")
            dst.write(chunk)
    except (http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DownloadError(f"Failed to download {url}: cut short after {size} bytes") from exc
    # http.client's read(n) returns what came when the connection ends early, without an
    # error: what is left of a declared Content-Length says it was cut.
    if getattr(src, "length", None):
        raise DownloadError(f"Failed to download {url}: cut short after {size} bytes")
    return size


def _local_blob(url: str) -> tuple[Path, str, int] | None:
    """The blob behind a file URL of this runner's own store, read without HTTP."""
    where = from_environ()
    if where is None or where.directory is None:
        return None
    token = where.token_of(url)
    if token is None:
        return None
    store = FileStore(where.directory)
    record = store.get(token)
    if record is None:
        raise DownloadError(f"Failed to download {url}: no such file, or it has expired")
    return store.blob_path(record.sha256), record.file_name, record.file_size


def fetch_to(
    url: str, target: str | Path, headers: dict[str, str] | None = None, limit: int | None = None
) -> tuple[str, int]:
    """Write the bytes of ``url`` (http(s), ``data:``, or this store's own) to ``target``;
    the name the source gives them, and their size."""
    with open(target, "wb") as dst:
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            data = base64.b64decode(payload) if head.endswith(";base64") else unquote(payload)
            raw = data.encode() if isinstance(data, str) else data
            if limit is not None and len(raw) > limit:
                raise DownloadError(f"{url[:40]}... is larger than the limit")
            dst.write(raw)
            return _hash_url(url), len(raw)
        if (local := _local_blob(url)) is not None:
            blob, name, size = local
            if limit is not None and size > limit:
                raise DownloadError(f"{url} is larger than the limit of {limit // MB} MB")
            with blob.open("rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)
            return name, size
        with _open(url, headers or {}) as resp:
            return _name_from(url, getattr(resp, "headers", None)), _copy(resp, dst, limit, url)


def download_file(
    url: str,
    target_dir: str | Path,
    *,
    force: bool = False,
    request_headers: dict[str, str] | None = None,
    filesize_limit: int | None = None,
) -> Path:
    """Download ``url`` into ``target_dir`` (relative: under the persistent directory) and
    return the file's path. A file already there with the same size is kept unless ``force``;
    ``filesize_limit`` is in megabytes. A URL of this runner's own file store is copied from
    disk, with no HTTP round trip. Raises ``DownloadError``."""
    target = Path(target_dir)
    if not target.is_absolute():
        target = Path(persistent_dir()) / target
    target = target.resolve()
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".fal_download.tmp.")
    os.close(fd)
    tmp = Path(tmp_name)
    limit = filesize_limit * MB if filesize_limit is not None else None
    try:
        name, size = fetch_to(url, tmp, request_headers, limit)
        path = target / name
        if path.exists() and path.stat().st_size == size and not force:
            tmp.unlink()
            return path
        os.replace(tmp, path)
        return path
    except DownloadError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"Failed to download {url} to {target}: {exc}") from exc


def _cached_file(directory: Path) -> Path | None:
    if not (directory / COMPLETE).exists():
        return None
    return next((f for f in directory.iterdir() if not f.name.startswith(".fal")), None)


def download_model_weights(
    url: str, force: bool = False, request_headers: dict[str, str] | None = None
) -> Path:
    """Download weights once per app: into ``FAL_MODEL_WEIGHTS_DIR/<sha256 of url>/``, under a
    lock so that runners starting together fetch them once; a download cut short is resumed
    where it stopped. Returns the file's path."""
    directory = Path(model_weights_dir()) / _hash_url(url)
    with cache_lock(directory.with_name(directory.name + ".lock")):
        if not force and (found := _cached_file(directory)) is not None:
            (directory / COMPLETE).touch()  # marks it used, as fal's .fal_used does
            return found
        directory.mkdir(parents=True, exist_ok=True)
        (directory / COMPLETE).unlink(missing_ok=True)
        partial = directory / PARTIAL
        if force:
            partial.unlink(missing_ok=True)
        name = _resume(url, partial, request_headers or {})
        path = directory / name
        os.replace(partial, path)
        (directory / COMPLETE).touch()
        return path


def model_weights_dir() -> PurePath:
    """Where weights are cached: ``FAL_MODEL_WEIGHTS_DIR``, else under the persistent dir."""
    found = os.environ.get("FAL_MODEL_WEIGHTS_DIR")
    return PurePath(found) if found else persistent_dir() / ".fal" / "model_weights"


def _resume(url: str, partial: Path, headers: dict[str, str]) -> str:
    """Fetch ``url`` into ``partial``, asking only for the bytes past what it holds; the name
    the server gives the file."""
    if urlparse(url).scheme not in ("http", "https"):
        name, _ = fetch_to(url, partial, headers)
        return name
    have = partial.stat().st_size if partial.exists() else 0
    ask = {**headers, "Range": f"bytes={have}-"} if have else headers
    try:
        resp = _open(url, ask)
    except DownloadError as exc:
        cause = exc.__cause__
        if have and isinstance(cause, urllib.error.HTTPError) and cause.code == 416:
            return _name_from(url, cause.headers)  # it was all there already
        raise
    with resp:
        status = getattr(resp, "status", 200)
        mode = "ab" if have and status == 206 else "wb"
        with partial.open(mode) as dst:
            _copy(resp, dst, None, url)
        return _name_from(url, getattr(resp, "headers", None))


def clone_repository(
    https_url: str,
    *,
    commit_hash: str | None = None,
    target_dir: str | Path | None = None,
    repo_name: str | None = None,
    force: bool = False,
    include_to_path: bool = False,
) -> Path:
    """Clone a git repository once per app (``FAL_REPOSITORY_DIR/<name>-<commit[:8]>``), at
    ``commit_hash`` when given, under a lock; a clone at another commit is replaced."""
    base = Path(target_dir or repository_dir())
    if repo_name is None:
        repo_name = Path(urlparse(https_url).path).stem
        if commit_hash:
            if len(commit_hash) < 8:
                raise ValueError(f"Commit hash '{commit_hash}' is too short.")
            repo_name += f"-{commit_hash[:8]}"
    path = base / repo_name
    with cache_lock(base / f".{repo_name}.lock"):
        if path.exists() and not force and _at_commit(path, commit_hash):
            return _maybe_on_path(path, include_to_path)
        if path.exists():
            shutil.rmtree(path)
        with tempfile.TemporaryDirectory(dir=base, prefix=f".{repo_name}.tmp") as tmp:
            _git("clone", "--recursive", https_url, tmp)
            if commit_hash:
                _git("checkout", commit_hash, cwd=tmp)
                _git("submodule", "update", "--init", "--recursive", cwd=tmp)
            os.rename(tmp, path)
    return _maybe_on_path(path, include_to_path)


def repository_dir() -> PurePath:
    """Where repositories are cloned: ``.fal/repos`` under the persistent directory."""
    return persistent_dir() / ".fal" / "repos"


def _at_commit(path: Path, commit_hash: str | None) -> bool:
    if commit_hash is None:
        return True
    try:
        head = _git("rev-parse", "HEAD", cwd=path)
        wanted = _git("rev-parse", commit_hash, cwd=path)
    except DownloadError:
        return False
    return head == wanted


def _git(*args: str, cwd: str | Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ADVICE": "0"}
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-3:]
        raise DownloadError(f"git {args[0]} failed: {' '.join(tail)}") from exc
    except OSError as exc:
        raise DownloadError(f"git is not available: {exc}") from exc
    return done.stdout.strip()


def _maybe_on_path(path: Path, include: bool) -> Path:
    if include and str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path
