"""The playground's pure parts: which GETs are pages, and the HTML rendered from plain data."""

from __future__ import annotations

import json
import re

import pytest

from yurt.playground.pages import AppRow, app_page, embedded_json, index_page
from yurt.playground.routing import accepts_html, bare_app, page_app, wants_page

APPS = {"default/echo", "acme/draw"}
BROWSER = [(b"Host", b"x"), (b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8")]
ASSETS = {"playground.js": "abc", "playground.css": "def"}


@pytest.mark.parametrize(
    ("path", "headers", "page"),
    [
        ("/", BROWSER, True),
        ("/", [(b"accept", b"*/*")], False),
        ("/", [(b"accept", b"application/json")], False),
        ("/", [], False),
        ("/default/echo/playground", [], True),  # the page's own address: any Accept
        ("/default/nope/playground", BROWSER, False),  # no such app: the router's 404
        ("/default/echo", BROWSER, True),  # a browser opening the app: redirected
        ("/default/echo/", BROWSER, True),
        ("/default/echo", [(b"accept", b"*/*")], False),  # an API client: 405 as before
        ("/default/echo/sub", BROWSER, False),  # an endpoint's path: not a page
        ("/default/echo/openapi.json", BROWSER, False),
        ("/default", BROWSER, False),
        ("//echo", BROWSER, False),
        ("/a/b/c/playground", BROWSER, False),
    ],
)
def test_which_gets_are_pages(path: str, headers: list[tuple[bytes, bytes]], page: bool) -> None:
    """Pages are the index for browsers, an app's page, and a browser's app address only."""
    assert wants_page(path, headers, APPS) is page


def test_accept_is_read_whatever_its_case() -> None:
    """Header names are matched without regard to case; the first Accept counts."""
    assert accepts_html([(b"ACCEPT", b"TEXT/HTML")])
    assert not accepts_html([(b"accept-language", b"text/html")])


def test_app_ids_from_paths() -> None:
    """``page_app`` and ``bare_app`` take exactly ``owner/app``."""
    assert page_app("/acme/draw/playground") == "acme/draw"
    assert page_app("/acme/playground") is None
    assert bare_app("/acme/draw") == "acme/draw"
    assert bare_app("/acme/draw/x") is None


def test_embedded_json_cannot_end_its_script_element() -> None:
    """A ``</script>`` inside a schema's text stays JSON and never closes the element."""
    value = {"description": "</script><script>alert(1)</script>"}
    text = embedded_json(value)
    assert "<" not in text and json.loads(text) == value


def test_index_rows_escape_names_and_hold_only_counts() -> None:
    """The index's rows carry the hooks, the counts and an escaped app name."""
    rows = [AppRow("acme/<b>", "key", runners=2, queued=3, running=1, endpoints=4)]
    html = index_page(rows, ASSETS)
    assert '<tr data-app="acme/&lt;b&gt;">' in html and "<b>" not in html
    assert '<td data-role="runners">2</td>' in html
    assert '<td data-role="queued">3</td>' in html
    assert 'href="/_yurt/playground/playground.css?v=def"' in html
    assert 'data-role="no-apps"' in index_page([], ASSETS)


def test_a_page_that_wants_a_key_holds_no_document() -> None:
    """With a key wanted the page has the key form and no schema; otherwise the reverse."""
    private = app_page("acme/draw", True, None, ASSETS)
    assert 'data-role="key"' in private and "yurt-openapi" not in private
    public = app_page("acme/draw", False, {"paths": {"/": {}}}, ASSETS)
    assert 'data-role="key"' not in public
    found = re.search(r'<script type="application/json" id="yurt-openapi">(.*?)</script>', public)
    assert found is not None and json.loads(found.group(1)) == {"paths": {"/": {}}}
