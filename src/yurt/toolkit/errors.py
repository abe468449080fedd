"""The toolkit's exceptions, by fal's names (``fal.toolkit.exceptions``; ``DownloadError`` from
its download helpers), under yurt's ``YurtError``."""

from __future__ import annotations

from yurt.errors import YurtError


class FalTookitException(YurtError):
    """Base of the toolkit's errors (fal's spelling, typo included, so ``except`` clauses
    written for fal still catch them)."""


class FileUploadException(FalTookitException):
    """A file could not be kept: no store, or the store refused it."""


class KVStoreException(FalTookitException):
    """The key-value store failed a call."""


class DownloadError(FalTookitException):
    """A download failed; the message names the URL and the reason."""
