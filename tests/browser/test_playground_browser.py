"""The playground driven in a real headless Chromium against a real ``yurt run``: forms filled
and submitted, statuses, results and media, cancel, a 422 beside its field, the index, keys,
logs, streamed events, snippets and the keyboard.

Elements are found by the data attributes of the playground's DOM contract (docs/playground.md),
never by CSS classes. The app is examples/playground_demo.py: ``/`` (a caption, a bounded size, a
filter to choose and an image; an image back, ``size`` wide), ``/paint`` (a colour and two
bounded numbers; an image back), ``/describe``, ``/slow`` (logs a line per step) and ``/stream``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from playground_driver import DEADLINE, Served, yurt_run

pytestmark = pytest.mark.timeout(300)

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


def test_form_runs_to_completed_and_renders_the_image(
    demo: Served, browser: Any, shot: Callable[..., Path], tmp_path: Path
) -> None:
    """A string, a bounded number, an enum and an uploaded PNG go through the queue; the status
    moves forward to COMPLETED and the returned image renders at the width the app returned."""
    page(browser, demo.page)
    endpoint = form_endpoint(browser)
    numbers = fill(endpoint, png(tmp_path / "in.png", 96, 64), size="240")
    shot("filled")
    endpoint.watch_status()
    endpoint.run()
    endpoint.wait_status("COMPLETED")
    seen = endpoint.statuses()
    assert seen and seen[-1] == "COMPLETED", seen
    assert [ORDER[s] for s in seen] == sorted(ORDER[s] for s in seen), f"went back: {seen}"
    assert endpoint.find('[data-role="request-id"]').text.strip()
    assert float(endpoint.find('[data-role="elapsed"]').text.strip().rstrip("s ")) >= 0
    widths = list(image_widths(endpoint.result_json()))
    assert widths, f"no image in {endpoint.result_json()}"
    img = endpoint.find('[data-role="result"] img[data-role="media"]')
    natural = until(
        browser,
        "the image to load",
        lambda: browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img
        ),
    )
    assert natural == widths[0] == int(numbers["size"])
    shot("completed")
    shot("completed-endpoint", endpoint.section)


def test_cancel_from_the_page(demo: Served, browser: Any, shot: Callable[..., Path]) -> None:
    """The slow endpoint, cancelled from the page while it runs, ends CANCELLED and its cancel
    button is disabled again."""
    page(browser, demo.page)
    endpoint = Endpoint(browser, SLOW)
    fill(endpoint, None, seconds="60", steps="60")
    endpoint.run()
    endpoint.wait_status("IN_QUEUE", "IN_PROGRESS")
    cancel = endpoint.find('[data-action="cancel"]')
    until(browser, "cancel to be enabled", cancel.is_enabled)
    shot("running")
    cancel.click()
    endpoint.wait_status("CANCELLED")
    until(browser, "cancel to be disabled", lambda: not cancel.is_enabled())
    shot("cancelled")


def test_422_shown_beside_its_field(
    demo: Served, browser: Any, shot: Callable[..., Path], tmp_path: Path
) -> None:
    """A number past its bound, with the browser's own check removed, comes back as a 422 whose
    message is shown next to that field."""
    page(browser, demo.page)
    endpoint = form_endpoint(browser)
    fill(endpoint, png(tmp_path / "in.png", 16, 16))
    form = '[data-role="input-form"]'
    number = endpoint.find(f"{form} input[type=number][max], {form} input[type=number][min]")
    name, high, low = (number.get_attribute(a) for a in ("name", "max", "min"))
    bound = high if high not in (None, "") else low
    past = float(bound) + 1 if high not in (None, "") else float(bound) - 1
    browser.execute_script(
        "arguments[0].removeAttribute('min'); arguments[0].removeAttribute('max');"
        "arguments[0].removeAttribute('step')",
        number,
    )
    number.clear()
    number.send_keys(str(int(past)) if past.is_integer() else str(past))
    endpoint.run()
    beside = endpoint.find(f'[data-error-for="{name}"]')
    message = until(browser, f"an error beside {name}", lambda: beside.text.strip())
    assert str(int(float(bound))) in message or bound in message, message
    assert endpoint.find('[data-role="error"]').text.strip()
    for other in endpoint.all("[data-error-for]"):
        if other.get_attribute("data-error-for") != name:
            assert not other.text.strip(), other.get_attribute("data-error-for")
    shot("rejected")


def test_index_lists_the_app_and_links_to_its_page(
    demo: Served, browser: Any, shot: Callable[..., Path]
) -> None:
    """``/`` in a browser lists the app with its runners and queue length, linking to its page."""
    from selenium.webdriver.common.by import By

    page(browser, demo.base + "/")
    row = browser.find_element(By.CSS_SELECTOR, f'[data-role="apps"] tr[data-app="{demo.app_id}"]')
    for number in ("runners", "queued"):
        assert int(row.find_element(By.CSS_SELECTOR, f'[data-role="{number}"]').text) >= 0
    link = row.find_element(By.CSS_SELECTOR, '[data-role="app-link"]')
    assert link.get_attribute("href") == demo.page
    shot("index")
    link.click()
    until(browser, "the app's page", lambda: browser.current_url == demo.page)
    title = browser.find_element(By.CSS_SELECTOR, 'h1[data-role="app-name"]')
    assert title.text.strip() == demo.app_id


@pytest.fixture
def private(chromium: None, tmp_path: Path) -> Iterator[tuple[Served, str]]:
    """A private app (tests/integration/access_apps.py) served with an API key: (served, key)."""
    from yurt.keys import KeyStore

    key = KeyStore(tmp_path / "data").create("API", "browser", time.time())[1]
    target = "tests/integration/access_apps.py::Private"
    with yurt_run(target, tmp_path / "data", tmp_path / "yurt.out") as served:
        yield served, key


def test_private_app_asks_for_a_key_and_keeps_it_for_the_session(
    private: tuple[Served, str], browser: Any, shot: Callable[..., Path]
) -> None:
    """A private app's page asks for a key before showing its endpoints; the key typed in is
    kept in sessionStorage only (not localStorage), survives a reload and makes the call work."""
    from selenium.webdriver.common.by import By

    served, key = private
    page(browser, served.page)
    assert not endpoints(browser), "endpoints shown before a key was given"
    box = browser.find_element(By.CSS_SELECTOR, 'input[data-role="key"][type="password"]')
    assert browser.find_elements(By.CSS_SELECTOR, f'label[for="{box.get_attribute("id")}"]')
    shot("asks-for-key")
    box.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, '[data-action="save-key"]').click()
    stored = "return window.sessionStorage.getItem('yurt-key')"
    until(browser, "the key in sessionStorage", lambda: browser.execute_script(stored) == key)
    until(browser, "the endpoints", lambda: endpoints(browser))
    browser.refresh()
    until(browser, "the endpoints after a reload", lambda: endpoints(browser))
    assert browser.execute_script(stored) == key
    local = browser.execute_script("return JSON.stringify(window.localStorage)")
    assert key.split(":")[-1] not in local
    endpoint = endpoints(browser)[0]
    fill(endpoint, None)
    endpoint.run()
    endpoint.wait_status("COMPLETED")
    assert endpoint.result_json() == {"text": f"private: {TEXT}"}
    shot("with-key")


def test_logs_appear_as_they_arrive(demo: Served, browser: Any, shot: Callable[..., Path]) -> None:
    """The slow endpoint's log lines show on the page while it is still running."""
    page(browser, demo.page)
    endpoint = Endpoint(browser, SLOW)
    fill(endpoint, None, seconds="60", steps="60")
    endpoint.watch_first("logs")
    endpoint.run()
    until(browser, "a log line", lambda: endpoint.all('[data-role="logs"] > *'))
    assert endpoint.status_at_first() == "IN_PROGRESS", "the line came only after the end"
    assert "step 1 of 60" in endpoint.find('[data-role="logs"] > *').text
    shot("logs")
    endpoint.find('[data-action="cancel"]').click()
    endpoint.wait_status("CANCELLED")


def test_streamed_events_appear(demo: Served, browser: Any, shot: Callable[..., Path]) -> None:
    """A streaming endpoint's events show one by one, and the run completes."""
    page(browser, demo.page)
    endpoint = Endpoint(browser, STREAM)
    fill(endpoint, None, upto="4", interval="0.5")
    endpoint.watch_first("events")
    endpoint.run()
    endpoint.wait_status("COMPLETED")
    assert endpoint.status_at_first() == "IN_PROGRESS", "the first event came only after the end"
    events = [e.text for e in endpoint.all('[data-role="events"] > *')]
    assert len(events) == 4 and all('"of": 4' in e or '"of":4' in e for e in events), events
    shot("events")


def test_snippets_follow_the_input_and_name_the_right_url(
    demo: Served, browser: Any, shot: Callable[..., Path]
) -> None:
    """Typing into the form updates the JSON view and all four snippets, which name this router
    and this app."""
    page(browser, demo.page)
    endpoint = Endpoint(browser, FORM)
    field = endpoint.find('[data-role="input-form"] [name="caption"]')
    marker = "snippet-check-7319"
    field.clear()
    field.send_keys(marker)
    json_view = endpoint.find('[data-role="json-input"]')
    until(browser, "the JSON view", lambda: marker in (json_view.get_attribute("value") or ""))
    snippets = {}
    for summary in endpoint.all("details > summary"):  # open each, as a reader would
        summary.click()
    for name in ("curl", "python-yurt", "python-fal", "js-fal"):
        snippet = endpoint.find(f'[data-snippet="{name}"]')
        snippets[name] = until(
            browser, f"the {name} snippet", lambda s=snippet: marker in s.text and s.text
        )
        assert demo.app_id in snippets[name], (name, snippets[name])
    path = "" if endpoint.path == "/" else endpoint.path
    assert f"{demo.base}/{demo.app_id}{path}" in snippets["curl"] or (
        f"{demo.base}/queue/{demo.app_id}{path}" in snippets["curl"]
    ), snippets["curl"]
    assert demo.base in snippets["python-yurt"], snippets["python-yurt"]
    assert demo.base in snippets["js-fal"], snippets["js-fal"]
    host = demo.base.removeprefix("http://")
    assert f"FAL_RUN_HOST={host}" in snippets["python-fal"], snippets["python-fal"]
    shot("snippets")


def test_keyboard_alone_fills_and_submits(
    demo: Served, browser: Any, shot: Callable[..., Path]
) -> None:
    """Tab reaches /paint's colour, width and height and its run button; arrow keys, typed
    numbers and Enter on the button run it to COMPLETED with those values."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    def press(*keys: str) -> None:  # to whatever has the focus, as a keyboard does
        ActionChains(browser).send_keys(*keys).perform()

    page(browser, demo.page)
    target = Endpoint(browser, PAINT)
    run = target.find('[data-action="run"]')
    select_all = [Keys.CONTROL, "a", Keys.CONTROL]
    keys = {"color": [Keys.ARROW_DOWN], "width": [*select_all, "40"], "height": [*select_all, "30"]}
    reached: set[str] = set()
    for _ in range(400):
        press(Keys.TAB)
        active = browser.switch_to.active_element
        if active == run:
            break
        name = active.get_attribute("name")
        if name in keys and name not in reached and active in target.controls():
            press(*keys[name])
            reached.add(name)
    else:
        pytest.fail("Tab never reached /paint's run button")
    assert reached == set(keys), f"Tab skipped {set(keys) - reached}"
    json_view = target.find('[data-role="json-input"]')
    sent = json.loads(json_view.get_attribute("value"))
    assert (sent["color"], int(sent["width"]), int(sent["height"])) == ("green", 40, 30), sent
    shot("keyboard")
    press(Keys.ENTER)
    target.wait_status("COMPLETED")
    assert list(image_widths(target.result_json())) == [40]
