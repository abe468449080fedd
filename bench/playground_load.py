"""Playground page load: an app's page in headless Chromium, from a warm router.

``yurt run examples/playground_demo.py`` serves the demo app (its endpoints: a form of a string,
a bounded number, an enum and an image; an image output; a slow one that logs; a stream) in its
own process, as a user starts it. Debian's Chromium (``/usr/bin/chromium`` through
``/usr/bin/chromedriver``, selenium's WebDriver, headless) loads ``/{owner}/{app}/playground``
a few times to warm the router and the browser, then ``--loads`` times more, each after a
navigation to ``about:blank``. Each load's figures come from the browser's own navigation timing,
``performance.getEntriesByType('navigation')[0]``, in ms from the navigation's start:

- ``loadEventEnd``: the page, its script and stylesheet loaded and the load event handled (what
  the 300 ms target is checked against);
- ``domContentLoadedEventEnd``: the HTML parsed and deferred scripts run;
- ``responseEnd``: the page's HTML received;
- ``firstContentfulPaint``: the first paint with content (the paint timing entry).

Each load checks that every endpoint's form is drawn by the end of the load event.

Before each load of the page, a one-line ``data:`` page is loaded as a baseline: what any
navigation costs this browser on this (shared, noisy) machine at that moment.

The rounds run twice: with the browser's cache (a returning visitor; static assets are served
with a cache header) and with it off through DevTools (``Network.setCacheDisabled``: every
asset fetched again, a first visit). Medians, p90 and min per figure; PASS/MISS against 300 ms.

    .venv/bin/python bench/playground_load.py [--loads 30] [--warmup 3] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300.0
CHROMIUM = os.environ.get("YURT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("YURT_CHROMEDRIVER", "/usr/bin/chromedriver")
# As the browser tests start it (tests/browser/playground_driver.py): nothing reaches the network.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1024")  # fmt: skip
FIGURES = ("loadEventEnd", "domContentLoadedEventEnd", "responseEnd", "firstContentfulPaint")
# What a navigation costs this browser on this machine now: one line of HTML, no server.
BASELINE = "data:text/html,<!doctype html><title>baseline</title><p>baseline"
NAVIGATION = """
const nav = performance.getEntriesByType('navigation')[0].toJSON();
const paint = performance.getEntriesByName('first-contentful-paint')[0];
nav.firstContentfulPaint = paint ? paint.startTime : null;
nav.sections = document.querySelectorAll('section[data-endpoint]').length;
return nav;
"""


@contextmanager
def yurt_run(target: str, tmp: Path) -> Iterator[str]:
    """``yurt run TARGET`` on a free port; yields the app's URL; SIGTERM on leaving."""
    log = tmp / "yurt.out"
    command = [sys.executable, "-m", "yurt.cli", "run", target, "--port", "0",
               "--data-dir", str(tmp / "data"), "--log-level", "warning"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"serving \S+ at (http://\S+)", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"yurt run did not serve:\n{log.read_text()}")
            time.sleep(0.05)
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Debian's Chromium, headless, through its chromedriver (no Selenium Manager download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def load_once(driver: Any, url: str, sections: int) -> dict[str, float]:
    """One navigation to ``url`` (from about:blank); its navigation timing entry, once the
    load event is over and ``sections`` endpoints are drawn."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 60
    while not (
        (entry := driver.execute_script(NAVIGATION))["loadEventEnd"]
        and entry["firstContentfulPaint"] is not None
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: no loadEventEnd within 60 s")
        time.sleep(0.01)  # the load event's handlers are still running
    if entry["type"] != "navigate":
        raise SystemExit(f"{url}: a {entry['type']!r} navigation, not a fresh one")
    if entry["sections"] != sections:
        raise SystemExit(f"{url}: {entry['sections']} endpoints drawn at the load event")
    return {k: float(entry[k]) for k in FIGURES}


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"  {name:<26} median {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms"
        f"   min {ordered[0]:7.1f} ms"
    )


def rounds(
    driver: Any, url: str, sections: int, warmup: int, loads: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``loads`` loads of the page, each after one of the baseline: (page, baseline) figures."""
    for _ in range(warmup):
        load_once(driver, url, sections)
    runs, base = [], []
    for _ in range(loads):
        base.append(load_once(driver, BASELINE, 0))
        runs.append(load_once(driver, url, sections))
    return {k: [r[k] for r in runs] for k in FIGURES}, {k: [r[k] for r in base] for k in FIGURES}


def screenshot(driver: Any, url: str, path: Path) -> None:
    """The whole page at ``url`` as a PNG (DevTools' captureScreenshot beyond the window)."""
    driver.get(url)
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--loads", type=int, default=30, help="timed loads per cache setting")
    p.add_argument("--warmup", type=int, default=3, help="untimed loads first")
    p.add_argument("--app", default="examples/playground_demo.py", help="FILE[::Class] to serve")
    p.add_argument("--screenshot", type=Path, default=None, help="write the page as a PNG here")
    args = p.parse_args()
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} missing: apt-get install chromium chromium-driver")
    with (
        tempfile.TemporaryDirectory(prefix="yurt-bench-") as tmp,
        yurt_run(args.app, Path(tmp)) as app_url,
        chromium(Path(tmp) / "profile") as driver,
    ):
        page = f"{app_url}/playground"
        driver.get(page)
        sections = driver.execute_script(
            "return document.querySelectorAll('section[data-endpoint]').length"
        )
        if not sections:
            raise SystemExit(f"{page}: no endpoints drawn")
        print(f"page: {page} ({sections} endpoints)")
        print(f"chromium: {driver.capabilities.get('browserVersion')}; {args.loads} loads")
        results = {}
        driver.execute_cdp_cmd("Network.enable", {})
        for cache in ("cached", "no cache"):
            off = {"cacheDisabled": cache != "cached"}
            driver.execute_cdp_cmd("Network.setCacheDisabled", off)
            results[cache], base = rounds(driver, page, sections, args.warmup, args.loads)
            print(f"browser cache: {cache}")
            for name in FIGURES:
                print(summary(name, results[cache][name]))
            print(summary("baseline loadEventEnd", base["loadEventEnd"]))
        if args.screenshot:
            screenshot(driver, page, args.screenshot)
    for cache, figures in results.items():
        median = statistics.median(figures["loadEventEnd"])
        verdict = "PASS" if median < TARGET_MS else "MISS"
        print(
            f"target: loadEventEnd median < {TARGET_MS:g} ms ({cache}): {median:.1f} ms {verdict}"
        )
    command = shlex.join(["bench/playground_load.py", *sys.argv[1:]])
    print(f"\nreproduce: .venv/bin/python {command}")


if __name__ == "__main__":
    main()
