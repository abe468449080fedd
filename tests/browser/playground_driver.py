"""What the playground's browser tests share: a real ``yurt run`` and Debian's Chromium.

Chromium and its driver are Debian's (``apt-get install chromium chromium-driver``; ``.ci/run``
installs them), driven through selenium's WebDriver with both paths given explicitly, so that
Selenium Manager never looks for (or downloads) a browser.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# Debian's paths; the variables point elsewhere (a test of the missing-browser path, or another
# system's packages).
CHROMIUM = Path(os.environ.get("YURT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("YURT_CHROMEDRIVER", "/usr/bin/chromedriver"))
# Generous: the tests must hold on a loaded 2-core machine.
DEADLINE = float(os.environ.get("YURT_BROWSER_DEADLINE", "60"))
# Chromium in a closed network: no background fetches, updates or sync (each would be a refused
# connection), and a profile of its own per test.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1024",
)


def artifacts_dir() -> Path:
    """Where the screenshots go: ``$YURT_TEST_ARTIFACTS/playground``."""
    base = os.environ.get("YURT_TEST_ARTIFACTS") or str(ROOT / "test-artifacts")
    return Path(base) / "playground"


@dataclass(frozen=True)
class Served:
    """A ``yurt run`` serving one app: its router's base URL and the app's id."""

    base: str
    app_id: str
    data_dir: Path

    @property
    def page(self) -> str:
        return f"{self.base}/{self.app_id}/playground"


@contextmanager
def yurt_run(target: str, data_dir: Path, log: Path) -> Iterator[Served]:
    """``yurt run TARGET`` on a free port (output to ``log``) until the block ends; then SIGTERM
    and an exit code of 0, or a kill when the block failed."""
    command = [sys.executable, "-m", "yurt.cli", "run", target, "--port", "0",
               "--data-dir", str(data_dir)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        found = None
        deadline = time.monotonic() + DEADLINE
        while found is None:
            if proc.poll() is not None:
                pytest.fail(f"yurt run exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"yurt run did not serve within {DEADLINE:g}s:\n{log.read_text()}")
            found = re.search(r"serving \S+ at (http://[^/\s]+)/(\S+)", log.read_text())
            time.sleep(0.05)
        yield Served(found.group(1), found.group(2), data_dir)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def browser_missing() -> str | None:
    """What is missing to drive Chromium, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return ", ".join(missing) or None


def chromium_options(profile: Path) -> Any:
    """Options for Debian's Chromium, headless, with ``profile`` as its user data dir."""
    from selenium.webdriver import ChromeOptions

    options = ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return options


def screenshot_png(driver: Any, element: Any = None) -> bytes:
    """The whole page, or one element, as a PNG, beyond the window's height (DevTools)."""
    if element is None:
        width, height = driver.execute_script(
            "const e = document.documentElement, m = Math.max;"
            "return [m(e.scrollWidth, e.clientWidth), m(e.scrollHeight, e.clientHeight)]"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": height}
    else:
        clip = {k: element.rect[k] for k in ("x", "y", "width", "height")}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    return base64.b64decode(shot["data"])
