"""Which ``GET`` (and ``HEAD``) requests are the playground's. Pure, and cheap: the request core
asks it for every ``GET`` or ``HEAD`` it admits (never for a ``POST``)."""

from __future__ import annotations

from collections.abc import Container, Sequence

Header = tuple[bytes, bytes]
ASSET_PREFIX = "/_yurt/playground/"
PAGE_SUFFIX = "/playground"
_HTML = b"text/html"
# HEAD is GET without the body (RFC 9110 9.3.2): the face answers both, aiohttp drops the body.
PAGE_METHODS = (b"GET", b"HEAD")


def accepts_html(headers: Sequence[Header]) -> bool:
    """Whether the request's ``Accept`` names ``text/html``: a browser navigating, not an API
    client (they send ``*/*``, ``application/json`` or nothing)."""
    for name, value in headers:
        if len(name) == 6 and name.lower() == b"accept":
            return _HTML in value.lower()
    return False


def page_app(path: str) -> str | None:
    """``owner/app`` of ``/{owner}/{app}/playground``, None for any other path."""
    if not path.endswith(PAGE_SUFFIX):
        return None
    app_id = path[1 : -len(PAGE_SUFFIX)]
    return app_id if app_id.count("/") == 1 else None


def bare_app(path: str) -> str | None:
    """``owner/app`` of ``/{owner}/{app}`` (a trailing slash allowed), None otherwise."""
    app_id = path[1:].removesuffix("/")
    return app_id if app_id.count("/") == 1 and "" not in app_id.split("/") else None


def wants_page(path: str, headers: Sequence[Header], apps: Container[str]) -> bool:
    """Whether a ``GET`` of ``path`` is a playground page: the index (``/`` from a browser), an
    app's page, or a browser's ``/{owner}/{app}`` (redirected to the page). Other ``GET``s,
    API clients' ``/`` among them, are answered as they were before the playground."""
    if path == "/":
        return accepts_html(headers)
    if (app_id := page_app(path)) is not None:
        return app_id in apps
    app_id = bare_app(path)
    return app_id is not None and app_id in apps and accepts_html(headers)
