"""Fixtures for the playground's browser tests: a real ``yurt run`` and a headless Chromium.

Without Chromium, chromedriver or selenium the tests fail where ``CI`` is set and skip elsewhere.
Screenshots of each state go to ``$YURT_TEST_ARTIFACTS/playground/`` (default
``test-artifacts/playground/`` at the repository root, ignored by git).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from playground_driver import (
    CHROMEDRIVER,
    DEADLINE,
    Served,
    artifacts_dir,
    browser_missing,
    chromium_options,
    screenshot_png,
    yurt_run,
)


@pytest.fixture(scope="session")
def chromium() -> None:
    """Chromium, chromedriver and selenium are here; or fail (``CI`` set) or skip."""
    missing = browser_missing()
    if missing is not None:
        why = f"the browser tests need {missing} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}; CI is set, so this fails instead of skipping")
        pytest.skip(f"{why}; skipped because CI is not set (in CI this fails)")


@pytest.fixture(scope="module")
def demo(chromium: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """examples/playground_demo.py served by ``yurt run``, no keys: every app is open."""
    tmp = tmp_path_factory.mktemp("demo")
    with yurt_run("examples/playground_demo.py", tmp / "data", tmp / "yurt.out") as served:
        yield served


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, for ``browser`` to see whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def browser(
    chromium: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, driven by Debian's chromedriver; a test that
    fails leaves a screenshot of where the page was, ``<test>-failed.png``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=chromium_options(profile))
    driver.set_page_load_timeout(DEADLINE)
    driver.set_script_timeout(DEADLINE)
    try:
        yield driver
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            path = artifacts_dir() / f"{shot_prefix(request)}-failed.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(screenshot_png(driver))
            print(f"screenshot of the failure: {path}")
    finally:
        driver.quit()


def shot_prefix(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)


@pytest.fixture
def shot(browser: Any, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """``shot(state)`` writes a full-page screenshot as ``<test>-<state>.png`` to the artefacts;
    ``shot(state, element)`` one of that element only."""
    directory = artifacts_dir()
    directory.mkdir(parents=True, exist_ok=True)
    test = shot_prefix(request)

    def take(state: str, element: Any = None) -> Path:
        path = directory / f"{test}-{state}.png"
        path.write_bytes(screenshot_png(browser, element))
        print(f"screenshot: {path}")
        return path

    return take
