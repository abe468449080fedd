"""Where ``File.from_bytes``/``from_path`` put bytes, by fal's repository names.

fal's own repositories (``"fal"``, ``"fal_v2"``, ``"fal_v3"``, ``"cdn"``) all mean yurt's file
store here; ``"in_memory"`` gives a ``data:`` URI, as fal's does; fal's cloud buckets
(``"gcp_storage"``, ``"r2"``) are refused with the fix. A ``FileRepository`` object of the
app's own is called as fal calls it.

A runner given a store directory (``YURT_FILES_DIR``, the local backend) writes into it
directly; one given only the router's URL posts the bytes to ``/files/upload``.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Literal

from yurt.files.location import UPLOAD_PATH, StoreLocation, from_environ
from yurt.files.store import FileStore, clean_name
from yurt.toolkit.errors import FileUploadException

RepositoryId = Literal["fal", "fal_v2", "fal_v3", "in_memory", "gcp_storage", "r2", "cdn"]
STORE_IDS = frozenset(("fal", "fal_v2", "fal_v3", "cdn"))
DEFAULT_REPOSITORY: RepositoryId = "fal_v3"
FALLBACK_REPOSITORY: list[RepositoryId | FileRepository] = ["fal"]


class FileData:
    """Bytes with a content type and a name, both filled in when not given (as fal does)."""

    def __init__(
        self, data: bytes, content_type: str | None = None, file_name: str | None = None
    ) -> None:
        self.data = data
        if content_type is None and file_name is not None:
            content_type, _ = mimetypes.guess_type(file_name)
        self.content_type = content_type or "application/octet-stream"
        if file_name is None:
            ext = mimetypes.guess_extension(self.content_type, strict=False) or ".bin"
            file_name = f"{uuid.uuid4().hex}{ext}"
        self.file_name = file_name


class FileRepository:
    """An app's own place for files: subclass and give ``save`` (``save_file`` reads the file
    and calls it)."""

    def save(self, data: FileData, **kwargs: Any) -> str:
        """Keep ``data``; return its URL."""
        raise NotImplementedError

    def save_file(self, file_path: str | Path, content_type: str, **kwargs: Any) -> str:
        """Keep the file at ``file_path``; return its URL."""
        path = Path(file_path)
        return self.save(FileData(path.read_bytes(), content_type, path.name))


def data_uri(data: bytes, content_type: str) -> str:
    """``data:<type>;base64,...``: what fal's in-memory repository returns. Pure."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def chain(
    repository: RepositoryId | FileRepository,
    fallback: RepositoryId | FileRepository | list[RepositoryId | FileRepository] | None,
) -> list[RepositoryId | FileRepository]:
    """The repositories to try in turn, fal's store names counted once (they are one store
    here). Raises ``ValueError`` naming the fix for a name yurt has no store for."""
    rest = [] if fallback is None else fallback if isinstance(fallback, list) else [fallback]
    out: list[RepositoryId | FileRepository] = []
    for repo in [repository, *rest]:
        if isinstance(repo, str):
            _check_id(repo)
            if repo in STORE_IDS and any(isinstance(r, str) and r in STORE_IDS for r in out):
                continue
        out.append(repo)
    return out


def _check_id(repo: str) -> None:
    if repo in STORE_IDS or repo == "in_memory":
        return
    if repo in ("gcp_storage", "r2"):
        raise ValueError(
            f"repository {repo!r} is a bucket of fal's own; yurt keeps files in its file store: "
            "leave repository out (or pass 'cdn'), or pass a FileRepository of your own"
        )
    raise ValueError(f'"{repo}" is not a valid built-in file repository')


def save_bytes(fdata: FileData, repos: list[RepositoryId | FileRepository]) -> str:
    """Keep ``fdata`` in the first repository that takes it; its URL."""
    url: str = _first(repos, lambda r: _save_bytes_in(r, fdata))
    return url


def save_path(
    path: Path, content_type: str, repos: list[RepositoryId | FileRepository]
) -> tuple[str, bytes | None]:
    """Keep the file at ``path``; its URL, and its bytes when they were read whole."""
    saved: tuple[str, bytes | None] = _first(repos, lambda r: _save_path_in(r, path, content_type))
    return saved


def _first(repos: list[RepositoryId | FileRepository], attempt: Any) -> Any:
    for i, repo in enumerate(repos):
        try:
            return attempt(repo)
        except Exception as exc:
            if i == len(repos) - 1:
                raise
            print(f"saving to repository {repo!r} failed ({exc}); trying {repos[i + 1]!r}")
    raise ValueError("no repository to save to")


def _save_bytes_in(repo: RepositoryId | FileRepository, fdata: FileData) -> str:
    if isinstance(repo, FileRepository):
        return repo.save(fdata)
    if repo == "in_memory":
        return data_uri(fdata.data, fdata.content_type)
    where = store_location()
    if where.directory is not None:
        record = FileStore(where.directory).put_bytes(
            fdata.data, fdata.content_type, fdata.file_name, where.ttl
        )
        return where.url(record.token, record.file_name)
    return _post(where, fdata.data, fdata.content_type, fdata.file_name)


def _save_path_in(
    repo: RepositoryId | FileRepository, path: Path, content_type: str
) -> tuple[str, bytes | None]:
    if isinstance(repo, FileRepository):
        return repo.save_file(path, content_type), None
    if repo == "in_memory":
        data = path.read_bytes()
        return data_uri(data, content_type), data
    where = store_location()
    if where.directory is not None:
        record = FileStore(where.directory).put_path(path, content_type, path.name, where.ttl)
        return where.url(record.token, record.file_name), None
    with path.open("rb") as f:
        return _post(where, f, content_type, path.name, path.stat().st_size), None


def store_location() -> StoreLocation:
    """The store this runner was given; ``FileUploadException`` with the fix when none."""
    where = from_environ()
    if where is None:
        raise FileUploadException(
            "this process was given no file store: yurt's runners get one from the platform "
            "(YURT_FILES_URL); outside a runner, pass repository='in_memory' for a data: URI"
        )
    return where


def _post(
    where: StoreLocation, body: Any, content_type: str, name: str, size: int | None = None
) -> str:
    """Upload through the router's ``POST /files/upload``, the body streamed from a file."""
    headers = {"Content-Type": content_type, "X-Fal-File-Name": clean_name(name)}
    if size is not None:
        headers["Content-Length"] = str(size)
    request = urllib.request.Request(
        where.public_url + UPLOAD_PATH, data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            url: str = json.load(resp)["url"]
            return url
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise FileUploadException(
            f"the file store refused the upload ({exc.code}): {detail}"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise FileUploadException(f"cannot upload to {where.public_url}: {exc}") from exc
