"""``yurt.serve``: an App behind a real router on an ephemeral port, for users' tests."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import yurt
from yurt.loader import load_app

from apps import Echo, Prompt, Rules

pytestmark = pytest.mark.timeout(120)


async def test_serve_runs_an_endpoint() -> None:
    """``app.run`` posts a dict or a model and returns the decoded reply; all stops on exit."""
    async with yurt.serve(Echo) as app:
        assert app.url.startswith("http://127.0.0.1:") and app.url.endswith("/default/echo")
        assert await app.run("/", {"prompt": "hi"}) == {"text": "echo: hi"}
        assert await app.run("/", Prompt(prompt="yo")) == {"text": "echo: yo"}
        backend = app.platform.backend
        app_id = app.app_id
    assert backend.runners(app_id) == []


async def test_serve_raises_request_error_with_status() -> None:
    """An error reply becomes a RequestError carrying the status and the detail."""
    async with yurt.serve(Rules) as app:
        with pytest.raises(yurt.RequestError) as info:
            await app.run("/", {"status": 418})
        assert info.value.status == 418 and info.value.detail == "asked for 418"
        with pytest.raises(yurt.RequestError) as info:
            await app.run("/crash", {})
        assert info.value.status == 503 and info.value.error_type == "runner_disconnected"


async def test_app_importing_a_module_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper module next to the app file travels in the payload: the runner needs no copy."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "yurt_sibling_shout.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    (tmp_path / "loud.py").write_text(
        textwrap.dedent(
            """
            import yurt
            from yurt_sibling_shout import shout

            class Loud(yurt.App):
                @yurt.endpoint("/")
                def run(self) -> dict:
                    return {"text": shout("hi")}
            """
        )
    )
    cls = load_app(f"{tmp_path / 'loud.py'}::Loud")
    # The runner starts elsewhere, where the helper cannot be imported.
    monkeypatch.chdir("/")
    try:
        async with yurt.serve(cls, data_dir=tmp_path / "data") as app:
            assert await app.run("/", {}) == {"text": "HI!"}
    finally:
        for name in ("yurt_sibling_shout", "yurt_app_loud"):
            sys.modules.pop(name, None)
