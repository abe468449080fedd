"""The playground's HTML, rendered from plain data. Pure.

The app page is a shell: the forms are drawn in the browser by ``static/playground.js`` from
the app's OpenAPI document. For an app anyone may call, the document is written into the page
(no second round trip); for an app that wants a key, the page holds none of it, and the script
fetches ``openapi.json`` with the key the user gives, so the schema stays behind the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

from yurt.playground.routing import ASSET_PREFIX


@dataclass(frozen=True, slots=True)
class AppRow:
    """One app as the index shows it: nothing an admin alone may see (no runner address)."""

    app_id: str
    access: str  # "public", or "key" when calling it wants a key
    runners: int | None  # None: not shown (a private app's activity is its callers' business)
    queued: int | None
    running: int | None
    endpoints: int


def _head(title: str, assets: dict[str, str]) -> str:
    css = f"{ASSET_PREFIX}playground.css?v={assets['playground.css']}"
    js = f"{ASSET_PREFIX}playground.js?v={assets['playground.js']}"
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        # No favicon request: the router has none to give.
        '<link rel="icon" href="data:,">\n'
        f'<link rel="stylesheet" href="{escape(css)}">\n'
        f'<script defer src="{escape(js)}"></script>\n</head>\n'
    )


def _row(row: AppRow) -> str:
    app = escape(row.app_id)
    return (
        f'<tr data-app="{app}">'
        f'<td><a data-role="app-link" href="/{app}/playground">{app}</a></td>'
        f'<td data-role="access">{escape(row.access)}</td>'
        f'<td data-role="endpoints">{row.endpoints}</td>'
        f'<td data-role="runners">{_count(row.runners)}</td>'
        f'<td data-role="queued">{_count(row.queued)}</td>'
        f'<td data-role="running">{_count(row.running)}</td></tr>\n'
    )


def _count(value: int | None) -> str:
    return '<span title="shown to callers with a key">-</span>' if value is None else str(value)


def index_page(rows: list[AppRow], assets: dict[str, str]) -> str:
    """``GET /`` for a browser: the apps, their state, and links to their pages."""
    body = "".join(_row(r) for r in rows) or (
        '<tr data-role="no-apps"><td colspan="6">No apps are deployed on this router.</td></tr>\n'
    )
    return (
        _head("yurt playground", assets)
        + '<body data-page="index">\n<header><a href="/">yurt</a> playground</header>\n<main>\n'
        "<h1>Apps</h1>\n"
        '<table data-role="apps">\n<caption>Apps served by this router</caption>\n'
        '<thead><tr><th scope="col">App</th><th scope="col">Access</th>'
        '<th scope="col">Endpoints</th><th scope="col">Runners</th>'
        '<th scope="col">Queued</th><th scope="col">Running</th></tr></thead>\n'
        f"<tbody>\n{body}</tbody>\n</table>\n</main>\n</body>\n</html>\n"
    )


def embedded_json(value: Any) -> str:
    """``value`` as JSON safe inside a ``<script>`` element: no ``<`` to end it early."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


_KEY_FORM = (
    '<form data-role="key-form" class="key">\n'
    '<label for="yurt-key">API key (<code>id:secret</code>), kept in this tab only</label>\n'
    '<input id="yurt-key" data-role="key" type="password" autocomplete="off" spellcheck="false">\n'
    '<button type="submit" data-action="save-key">Use key</button>\n'
    '<p data-role="key-status" role="status"></p>\n</form>\n'
)


def app_page(
    app_id: str, wants_key: bool, document: dict[str, Any] | None, assets: dict[str, str]
) -> str:
    """An app's page: its name, a key form where it wants one, and the document when it may be
    shown to anyone (``None``: the script fetches it with the key)."""
    app = escape(app_id)
    doc = (
        f'<script type="application/json" id="yurt-openapi">{embedded_json(document)}</script>\n'
        if document is not None
        else ""
    )
    return (
        _head(f"{app_id} · yurt playground", assets)
        + f'<body data-page="app" data-app="{app}" data-private="{str(wants_key).lower()}">\n'
        '<header><a href="/">yurt</a> playground</header>\n<main>\n'
        f'<h1 data-role="app-name">{app}</h1>\n'
        + (_KEY_FORM if wants_key else "")
        + '<p data-role="page-status" role="status"></p>\n'
        '<div data-role="endpoints"></div>\n'
        "<noscript>This page needs JavaScript. The app's schema is at "
        f'<a href="/{app}/openapi.json">openapi.json</a>.</noscript>\n'
        + doc
        + "</main>\n</body>\n</html>\n"
    )
