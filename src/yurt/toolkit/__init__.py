"""fal's toolkit on yurt: ``from yurt.toolkit import File, Image, download_model_weights``.

The names and JSON of ``fal.toolkit``, so an app written for fal runs with its import changed.
Outputs go to yurt's file store and come back as absolute URLs under the router's public URL
(``docs/files.md``). Pillow is imported only when an image is opened.
"""

from __future__ import annotations

from yurt.toolkit.download import (
    FAL_MODEL_WEIGHTS_DIR,
    FAL_PERSISTENT_DIR,
    FAL_REPOSITORY_DIR,
    clone_repository,
    download_file,
    download_model_weights,
)
from yurt.toolkit.errors import (
    DownloadError,
    FalTookitException,
    FileUploadException,
    KVStoreException,
)
from yurt.toolkit.file import File, FileField
from yurt.toolkit.image import (
    Image,
    ImageField,
    ImageSize,
    ImageSizeField,
    ImageSizeInput,
    get_image_size,
)
from yurt.toolkit.kv import KVStore
from yurt.toolkit.media import Audio, AudioField, Video, VideoField
from yurt.toolkit.repository import FileData, FileRepository

__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "Audio",
    "AudioField",
    "DownloadError",
    "FalTookitException",
    "File",
    "FileData",
    "FileField",
    "FileRepository",
    "FileUploadException",
    "Image",
    "ImageField",
    "ImageSize",
    "ImageSizeField",
    "ImageSizeInput",
    "KVStore",
    "KVStoreException",
    "Video",
    "VideoField",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "get_image_size",
]
