"""``File``: a file an endpoint returns or takes, as a URL with its type, name and size.

It serialises to fal's JSON, ``{"url", "content_type", "file_name", "file_size"}`` (the bytes
it may hold stay out), and an input field typed ``File`` takes that object or a bare
``http``/``https``/``data`` URL string, as fal's does.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, Field, model_validator

from yurt.toolkit.repository import (
    DEFAULT_REPOSITORY,
    FALLBACK_REPOSITORY,
    FileData,
    FileRepository,
    RepositoryId,
    chain,
    save_bytes,
    save_path,
)

Repository = RepositoryId | FileRepository
Fallback = Repository | list[Repository] | None


def ui_field(kind: str, **kwargs: Any) -> Any:
    """``pydantic.Field`` with ``{"ui": {"field": kind}}`` in its JSON schema (fal's playground
    hint)."""
    extra = kwargs.pop("json_schema_extra", None) or {}
    if isinstance(extra, dict):
        extra.setdefault("ui", {}).setdefault("field", kind)
    kwargs["json_schema_extra"] = extra
    return Field(*kwargs.pop("args", ()), **kwargs)


def FileField(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` the playground shows as a file input."""
    return ui_field("file", args=args, **kwargs)


class File(BaseModel):
    """A file, by URL. Made with ``from_bytes``, ``from_path`` or ``from_url``."""

    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(
        default=None, description="The mime type of the file.", examples=["image/png"]
    )
    file_name: str | None = Field(
        default=None,
        description="The name of the file. It will be auto-generated if not provided.",
        examples=["z9RV14K95DvU.png"],
    )
    file_size: int | None = Field(
        default=None, description="The size of the file in bytes.", examples=[4404019]
    )
    file_data: bytes | None = Field(default=None, description="File data", exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _from_url_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if urlparse(value).scheme not in ("http", "https", "data"):
                raise ValueError("value must be a valid URL")
            return {"url": value}
        return value

    @classmethod
    def from_url(cls, url: str) -> File:
        """A ``File`` naming ``url``, nothing downloaded."""
        return cls(url=url)

    @classmethod
    def _from_url(cls, url: str) -> File:
        # fal's demo apps build their schema examples with it.
        return cls(url=url)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: Repository = DEFAULT_REPOSITORY,
        fallback_repository: Fallback = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> File:
        """Keep ``data`` in the file store (``repository="in_memory"``: a ``data:`` URI)."""
        fdata = FileData(data, content_type, file_name)
        url = save_bytes(fdata, chain(repository, fallback_repository))
        return cls(
            url=url,
            content_type=fdata.content_type,
            file_name=fdata.file_name,
            file_size=len(data),
            file_data=data,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        content_type: str | None = None,
        repository: Repository = DEFAULT_REPOSITORY,
        multipart: bool | None = None,
        fallback_repository: Fallback = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> File:
        """Keep a copy of the file at ``path``, read in chunks. Its content type is guessed
        from its name when not given."""
        file_path = Path(path)
        if not file_path.exists():
            raise FileNotFoundError(f"File {file_path} does not exist")
        content_type = (
            content_type or mimetypes.guess_type(file_path.name)[0] or "application/octet-stream"
        )
        url, data = save_path(file_path, content_type, chain(repository, fallback_repository))
        return cls(
            url=url,
            file_data=data,
            content_type=content_type,
            file_name=file_path.name,
            file_size=file_path.stat().st_size,
        )

    @classmethod
    async def from_bytes_async(cls, data: bytes, *args: Any, **kwargs: Any) -> File:
        """``from_bytes`` in a thread."""
        return await asyncio.to_thread(cls.from_bytes, data, *args, **kwargs)

    @classmethod
    async def from_path_async(cls, path: str | Path, *args: Any, **kwargs: Any) -> File:
        """``from_path`` in a thread."""
        return await asyncio.to_thread(cls.from_path, path, *args, **kwargs)

    def as_bytes(self) -> bytes:
        """The bytes this object was made from; ``ValueError`` if it holds none."""
        if self.file_data is None:
            raise ValueError("File has not been downloaded")
        return self.file_data

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Download the file to ``path``."""
        from yurt.toolkit.download import download_file

        file_path = Path(path).resolve()
        if file_path.exists() and not overwrite:
            raise FileExistsError(f"File {file_path} already exists")
        downloaded = download_file(self.url, target_dir=file_path.parent, force=True)
        downloaded.replace(file_path)
        return file_path
