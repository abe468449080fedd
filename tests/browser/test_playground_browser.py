"""The playground driven in a real headless Chromium against a real ``yurt run``: forms filled
and submitted, statuses, results and media, cancel, a 422 beside its field, the index, keys,
logs, streamed events, snippets and the keyboard.

The app is examples/playground_demo.py, served by ``yurt run``; how the tests find its parts on
the page is in playground_page.py.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from playground_driver import DEADLINE, Served, yurt_run
from playground_page import (
    FORM,
    ORDER,
    PAINT,
    SLOW,
    STREAM,
    TEXT,
    Endpoint,
    endpoints,
    fill,
    form_endpoint,
    image_widths,
    page,
    png,
    until,
)

pytestmark = pytest.mark.timeout(300)
NUMBERS = ("runners", "queued", "running")


def call(method: str, url: str, body: Any = None) -> Any:
    """One JSON request from the test itself (not the browser); the decoded reply."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"content-type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=DEADLINE) as resp:
        return json.loads(resp.read() or b"null")


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
    """A size past its maximum, with the browser's own check removed, reaches the app and its 422
    is shown next to that field (and no other), the run ending FAILED."""
    page(browser, demo.page)
    endpoint = form_endpoint(browser)
    fill(endpoint, png(tmp_path / "in.png", 16, 16))
    size = endpoint.find('[data-role="input-form"] [name="size"]')
    assert size.get_attribute("max") == "512"
    browser.execute_script(
        "for (const a of ['min', 'max', 'step']) arguments[0].removeAttribute(a)", size
    )
    size.clear()
    size.send_keys("513")
    endpoint.run()
    endpoint.wait_status("FAILED")
    beside = endpoint.find('[data-error-for="size"]')
    message = until(browser, "an error beside size", lambda: beside.text.strip())
    assert "512" in message, message
    assert endpoint.find('[data-role="error"]').text.strip()
    for other in endpoint.all("[data-error-for]"):
        if other.get_attribute("data-error-for") != "size":
            assert not other.text.strip(), other.get_attribute("data-error-for")
    shot("rejected")


def test_index_lists_the_app_and_links_to_its_page(
    demo: Served, browser: Any, shot: Callable[..., Path]
) -> None:
    """``/`` in a browser lists the app with its live counts (a request running through the
    queue shows as a runner and a running request) and links to its page; a browser opening the
    app's own address lands on that page too."""
    from selenium.webdriver.common.by import By

    row_css = f'[data-role="apps"] tr[data-app="{demo.app_id}"]'

    def counts() -> dict[str, int]:
        page(browser, demo.base + "/")
        row = browser.find_element(By.CSS_SELECTOR, row_css)
        cells = {n: row.find_element(By.CSS_SELECTOR, f'[data-role="{n}"]').text for n in NUMBERS}
        return {n: int(text) for n, text in cells.items()}

    submitted = call("POST", f"{demo.base}/queue/{demo.app_id}/slow", {"seconds": 60, "steps": 1})
    try:
        until(browser, "the running request in the index", lambda: counts()["running"] >= 1)
        assert counts()["runners"] >= 1  # and every count a number (counts() parses them)
        shot("index")
    finally:
        call("PUT", submitted["cancel_url"])
    link = browser.find_element(By.CSS_SELECTOR, f'{row_css} [data-role="app-link"]')
    assert link.get_attribute("href") == demo.page
    link.click()
    until(browser, "the app's page", lambda: browser.current_url == demo.page)
    title = browser.find_element(By.CSS_SELECTOR, 'h1[data-role="app-name"]')
    assert title.text.strip() == demo.app_id
    browser.get(f"{demo.base}/{demo.app_id}")
    until(browser, "the page from the app's address", lambda: browser.current_url == demo.page)


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
    """Typing into the form updates the JSON view and all four snippets, which name this router,
    this app and the endpoint's path."""
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
    assert f"-X POST {demo.base}/{demo.app_id} " in snippets["curl"], snippets["curl"]
    assert demo.base in snippets["python-yurt"], snippets["python-yurt"]
    assert demo.base in snippets["js-fal"], snippets["js-fal"]
    host = demo.base.removeprefix("http://")
    assert f"FAL_RUN_HOST={host}" in snippets["python-fal"], snippets["python-fal"]
    paint = Endpoint(browser, PAINT)  # an endpoint with a path: each snippet names it
    for summary in paint.all("details > summary"):
        summary.click()
    for name in ("curl", "python-yurt", "python-fal", "js-fal"):
        text = paint.find(f'[data-snippet="{name}"]').text
        assert f"{demo.app_id}/paint" in text, (name, text)
    assert f"-X POST {demo.base}/{demo.app_id}/paint " in paint.find('[data-snippet="curl"]').text
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
