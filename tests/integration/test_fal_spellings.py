"""An App written for fal answers at the URL fal would give it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fal_apps import BiRefNetRMBG, Upscaler

from support import served

pytestmark = pytest.mark.timeout(180)


async def test_default_name_is_fals(tmp_path: Path) -> None:
    """BiRefNetRMBG answers at /default/bi-ref-net-r-m-b-g, the URL fal derives from it."""
    async with served(BiRefNetRMBG, tmp_path) as app:
        assert app.app_id == "default/bi-ref-net-r-m-b-g"
        status, body, _ = await app.post(json={"url": "a.png"})
        assert (status, body) == (200, {"url": "a.png#rmbg"})
        async with app.session.post(
            f"{app.platform.url}/default/bi-ref-net-rmbg", json={"url": "a.png"}
        ) as resp:
            assert resp.status == 404


async def test_name_keyword_names_the_url(tmp_path: Path) -> None:
    """``class Upscaler(yurt.App, name="my-upscaler")`` answers at /default/my-upscaler."""
    async with served(Upscaler, tmp_path) as app:
        assert app.app_id == "default/my-upscaler"
        status, body, _ = await app.post(json={"url": "a.png"})
        assert (status, body) == (200, {"url": "a.png#x4"})
