"""The playground's pages as the browser tests see them: an endpoint's section, waits, forms.

Elements are found by the data attributes of the playground's DOM contract (docs/playground.md),
never by CSS classes. The app is examples/playground_demo.py: ``/`` (a caption, a bounded size, a
filter to choose and an image; an image back, ``size`` wide), ``/paint`` (a colour and two
bounded numbers; an image back), ``/describe``, ``/slow`` (logs a line per step) and ``/stream``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from playground_driver import DEADLINE

POLL = 0.1
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
ORDER = {"IN_QUEUE": 0, "IN_PROGRESS": 1, "COMPLETED": 2, "FAILED": 2, "CANCELLED": 2}
TEXT = "a yurt on the steppe"
FORM, PAINT, SLOW, STREAM = "/", "/paint", "/slow", "/stream"
# Records every text [data-role=status] takes from now on, in window.__statuses.
WATCH_STATUS = """
const el = arguments[0];
window.__statuses = [];
new MutationObserver(() => window.__statuses.push(el.textContent.trim()))
    .observe(el, {childList: true, characterData: true, subtree: true});
"""
# Records, in window.__statusAtFirst, the status when arguments[0] (a list) got its first child.
WATCH_FIRST_CHILD = """
const list = arguments[0], status = arguments[1];
window.__statusAtFirst = null;
const seen = new MutationObserver(() => {
    if (list.children.length && window.__statusAtFirst === null) {
        window.__statusAtFirst = status.textContent.trim();
        seen.disconnect();
    }
});
seen.observe(list, {childList: true});
"""


def until(driver: Any, what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Wait (WebDriverWait) until ``check()`` is truthy; fail saying what was awaited."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, timeout, poll_frequency=POLL, ignored_exceptions=(StaleElementReferenceException,)
    )
    try:
        return wait.until(lambda _: check())
    except TimeoutException:
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


class Endpoint:
    """One endpoint's ``<section data-endpoint>`` on an app's page."""

    def __init__(self, driver: Any, path: str) -> None:
        self.driver = driver
        self.path = path

    @property
    def section(self) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'section[data-endpoint="{self.path}"]')

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.section.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.section.find_elements(By.CSS_SELECTOR, css))

    def controls(self) -> list[Any]:
        """The form's named controls (not the JSON view)."""
        return [
            c
            for c in self.all('[data-role="input-form"] [name]')
            if c.get_attribute("data-role") != "json-input" and c.tag_name != "button"
        ]

    def status(self) -> str:
        return str(self.find('[data-role="status"]').text.strip())

    def watch_status(self) -> None:
        self.driver.execute_script(WATCH_STATUS, self.find('[data-role="status"]'))

    def watch_first(self, role: str) -> None:
        """Note the status at the moment ``[data-role=role]`` gets its first child."""
        lists = self.find(f'[data-role="{role}"]'), self.find('[data-role="status"]')
        self.driver.execute_script(WATCH_FIRST_CHILD, *lists)

    def status_at_first(self) -> str:
        return str(self.driver.execute_script("return window.__statusAtFirst"))

    def statuses(self) -> list[str]:
        seen = self.driver.execute_script("return window.__statuses")
        return [s for s in seen if s]

    def wait_status(self, *wanted: str) -> str:
        def reached() -> str | None:
            status = self.status()
            if status in FINAL and status not in wanted:
                error = self.all('[data-role="error"]')
                pytest.fail(
                    f"{self.path}: {status}, not {wanted}: {error[0].text if error else ''}"
                )
            return status if status in wanted else None

        found: str = until(self.driver, f"{self.path} to be {' or '.join(wanted)}", reached)
        return found

    def run(self) -> None:
        self.find('[data-action="run"]').click()

    def result_json(self) -> Any:
        return json.loads(self.find('[data-role="result-json"]').text)


def page(driver: Any, url: str) -> None:
    """Open ``url`` and wait for the page's first endpoint, its key form, or the index."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    until(
        driver,
        f"{url} to show",
        lambda: driver.find_elements(
            By.CSS_SELECTOR, "section[data-endpoint], [data-role=apps], [data-role=key]"
        ),
    )


def endpoints(driver: Any) -> list[Endpoint]:
    from selenium.webdriver.common.by import By

    sections = driver.find_elements(By.CSS_SELECTOR, "section[data-endpoint]")
    return [Endpoint(driver, s.get_attribute("data-endpoint")) for s in sections]


def form_endpoint(driver: Any) -> Endpoint:
    """``/``, whose form holds a string, a bounded number, an enum and an image upload."""
    endpoint = Endpoint(driver, FORM)
    form = '[data-role="input-form"] '
    kinds = {
        "caption": "input[type=text], textarea",
        "size": 'input[type=number][min="16"][max="512"]',
        "filter": "select",
        "image": "input[type=file]",
    }
    for name, kind in kinds.items():
        assert endpoint.all(f'{form}[name="{name}"]:is({kind})'), f"no {kind} named {name}"
    return endpoint


def png(path: Path, width: int, height: int) -> Path:
    """A small PNG made with Pillow: a warm gradient, so that a screenshot shows something."""
    from PIL import Image

    ramp = Image.linear_gradient("L").resize((width, height))
    glow = Image.radial_gradient("L").resize((width, height))
    Image.merge("RGB", (Image.eval(glow, lambda v: 255 - v // 3), ramp, glow)).save(path)
    return path


def fill(endpoint: Endpoint, image: Path | None, **values: str) -> dict[str, Any]:
    """Fill every control: ``values`` by name, files with ``image``, selects with their last
    option, bounded numbers with their minimum, texts with TEXT. Returns the numbers set (and
    ``values``)."""
    from selenium.webdriver.support.ui import Select

    numbers: dict[str, Any] = {}
    for control in endpoint.controls():
        kind = (control.get_attribute("type") or "").lower()
        name = control.get_attribute("name")
        if name in values:
            control.clear()
            control.send_keys(values[name])
            numbers[name] = values[name]
        elif kind == "file":
            assert image is not None, f"{endpoint.path} wants a file"
            control.send_keys(str(image))
        elif control.tag_name == "select":
            options = Select(control).options
            Select(control).select_by_index(len(options) - 1)
        elif kind == "number":
            low = control.get_attribute("min")
            if low not in (None, ""):
                control.clear()
                control.send_keys(low)
            numbers[name] = control.get_attribute("value")
        elif kind in ("text", "") or control.tag_name == "textarea":
            control.clear()
            control.send_keys(TEXT)
    return numbers


def image_widths(value: Any) -> Iterator[int]:
    """The ``width`` of every image-like object (a ``url`` and a ``width``) in a result."""
    if isinstance(value, dict):
        if "url" in value and isinstance(value.get("width"), int):
            yield value["width"]
        for item in value.values():
            yield from image_widths(item)
    elif isinstance(value, list):
        for item in value:
            yield from image_widths(item)
