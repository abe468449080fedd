"""The app data directory's path and the variables a runner gets for it (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from yurt.appdata import app_data_env, app_data_path
from yurt.backends.localproc import runner_env

DATA = Path("/srv/yurt/appdata/team/echo")


def test_runner_env_points_the_caches_into_the_app_data_dir() -> None:
    """With a data directory, the runner gets YURT_APP_DATA_DIR and every cache under it."""
    env = runner_env({"PATH": "/bin"}, [], (), DATA)
    assert {k: env[k] for k in app_data_env(str(DATA))} == {
        "YURT_APP_DATA_DIR": str(DATA),
        "HF_HOME": f"{DATA}/huggingface",
        "TORCH_HOME": f"{DATA}/torch",
        "XDG_CACHE_HOME": f"{DATA}/cache",
        "FAL_MODEL_WEIGHTS_DIR": f"{DATA}/.fal/model_weights",
    }


def test_a_cache_the_operator_passes_wins_but_the_data_dir_does_not_move() -> None:
    """A cache named in pass_env keeps the operator's value; YURT_APP_DATA_DIR is the app's."""
    environ = {"HF_HOME": "/big/hf", "TORCH_HOME": "/big/torch", "YURT_APP_DATA_DIR": "/elsewhere"}
    env = runner_env(environ, [], ("HF_HOME",), DATA)
    assert env["HF_HOME"] == "/big/hf"  # passed on purpose
    assert env["TORCH_HOME"] == f"{DATA}/torch"  # not passed: the server's own is not leaked
    assert env["YURT_APP_DATA_DIR"] == str(DATA)


def test_no_data_dir_no_variables() -> None:
    """Without a data directory (a backend built without one), no cache variable is set."""
    env = runner_env({"PATH": "/bin"}, [])
    assert not set(app_data_env("/x")) & set(env)


@pytest.mark.parametrize("app_id", ["team", "team/..", "../echo", "team//", "a/b/c", "/echo"])
def test_an_app_id_that_would_leave_the_root_is_refused(app_id: str) -> None:
    """Only owner/app with two real parts makes a path; anything else is a ValueError."""
    with pytest.raises(ValueError, match="owner/app"):
        app_data_path(Path("/srv/appdata"), app_id)


def test_app_data_path_is_owner_then_app() -> None:
    """owner/app maps to root/owner/app."""
    assert app_data_path(Path("/srv/appdata"), "team/echo") == Path("/srv/appdata/team/echo")
