"""An app's persistent data directory: where it is and the variables that tell the app.

Each app (``owner/app``) has one directory that outlives its runners: every runner of the app
shares it, across revisions, and no other app sees it. On the local backend it is
``DATA_DIR/appdata/<owner>/<app>`` (``0700``); on Nomad it is the app's volume mounted at
``/data`` (``[nomad.volumes]``). The usual caches point into it, so weights one runner
downloaded are there for the next.
"""

from __future__ import annotations

from pathlib import Path

# The variable that names the directory, on both backends.
APP_DATA_ENV = "YURT_APP_DATA_DIR"


def app_data_env(root: str) -> dict[str, str]:
    """The variables that point an app at its data directory ``root`` and the usual caches
    into it. Pure.

    The same names and layout on both backends. ``FAL_MODEL_WEIGHTS_DIR`` is where fal's
    toolkit keeps weights under its /data (``/data/.fal/model_weights``).
    """
    return {
        APP_DATA_ENV: root,
        "HF_HOME": f"{root}/huggingface",
        "TORCH_HOME": f"{root}/torch",
        "XDG_CACHE_HOME": f"{root}/cache",
        "FAL_MODEL_WEIGHTS_DIR": f"{root}/.fal/model_weights",
    }


def app_data_path(root: Path, app_id: str) -> Path:
    """``root/<owner>/<app>``: the data directory of app ``owner/app`` under ``root``. Pure.

    Raises ``ValueError`` for an id that would leave ``root`` (an empty, "." or ".." part).
    """
    parts = app_id.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ValueError(f"app id {app_id!r} is not owner/app")
    return root.joinpath(*parts)
