"""``Audio`` and ``Video``: files the playground shows as a player (fal's ``ui`` hint)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from yurt.toolkit.file import File, ui_field


class Audio(File):
    """An audio file."""

    model_config = ConfigDict(json_schema_extra={"ui": {"field": "audio"}})


class Video(File):
    """A video file."""

    model_config = ConfigDict(json_schema_extra={"ui": {"field": "video"}})


def AudioField(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` the playground shows as an audio input."""
    return ui_field("audio", args=args, **kwargs)


def VideoField(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` the playground shows as a video input."""
    return ui_field("video", args=args, **kwargs)
