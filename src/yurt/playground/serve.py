"""The playground's routes, as the router's aiohttp face serves them.

Pages are answered to anyone: an app's page holds its schema only where anyone may call the app
(``pages.py``). Assets are read from the package once, at start, and sent with a version in
their URL, so browsers may keep them for a day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from yurt.openapi import document
from yurt.playground.pages import AppRow, app_page, index_page
from yurt.playground.routing import ASSET_PREFIX, bare_app, page_app

if TYPE_CHECKING:
    from yurt.router.dispatch import AppRoute
    from yurt.router.server import Router

ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}
ASSET_CACHE = "public, max-age=86400"
PAGE_CACHE = "no-cache"  # pages show live state: always asked again
# Pages run only the package's own script and talk only to the router. An app's output may name
# media elsewhere (a bucket's URL, say), so images, audio and video may come from any http(s)
# address; nothing may frame a page, which holds a key in its session storage.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob: http: https:; media-src 'self' data: blob: http: https:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file of the package, with its type and version (a digest of its bytes)."""

    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The script and stylesheet, read from the package's ``static/`` folder."""
    folder = resources.files("yurt.playground").joinpath("static")
    out: dict[str, Asset] = {}
    for name, kind in ASSETS.items():
        body = folder.joinpath(name).read_bytes()
        out[name] = Asset(body, kind, hashlib.sha256(body).hexdigest()[:16])
    return out


def _html(text: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers={
            "cache-control": PAGE_CACHE,
            "x-content-type-options": "nosniff",
            "content-security-policy": PAGE_POLICY,
        },
    )


class Playground:
    """Answers the playground's pages and assets from the router's routes and queue."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.assets = load_assets()
        self.versions = {name: a.etag for name, a in self.assets.items()}

    def serve(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The page or asset a ``GET`` the request core left to the face asks for; None: not
        the playground's."""
        path = request.path
        if path.startswith(ASSET_PREFIX):
            return self.asset(path, request.headers.get("if-none-match"))
        if path == "/":
            return _html(index_page(self.rows(), self.versions))
        if (app_id := page_app(path)) is not None:
            route = self.router.routes.get(app_id)
            return self.app(route) if route is not None else None
        if (app_id := bare_app(path)) is not None and app_id in self.router.routes:
            # A browser opening an app's address: its page (API calls there are POSTs).
            target = f"/{quote(app_id)}/playground"
            return web.Response(
                status=303, headers={"location": target, "cache-control": PAGE_CACHE}
            )
        return None

    def app(self, route: AppRoute) -> web.Response:
        """An app's page; its OpenAPI document only when anyone may call it."""
        wants_key = route.spec.app_auth != "public" and self.router.gate.keys_on()
        doc = None if wants_key else document(route.spec)
        return _html(app_page(route.app_id, wants_key, doc, self.versions))

    def rows(self) -> list[AppRow]:
        """The index's rows: the apps, sorted, with counts only, and those only for apps anyone
        may call."""
        router = self.router
        keys_on = router.gate.keys_on()
        rows = []
        for app_id, route in sorted(router.routes.items()):
            public = route.spec.app_auth == "public" or not keys_on
            if not public:
                # Who may not call the app does not learn how busy it is either.
                rows.append(AppRow(app_id, "key", None, None, None, len(route.paths)))
                continue
            depth = router.queue.depth(app_id) if router.queue is not None else None
            queued, running = depth if depth is not None else (0, 0)
            rows.append(
                AppRow(
                    app_id=app_id,
                    access="public",
                    runners=len(router.backend.runners(app_id)),
                    queued=queued,
                    running=max(running, route.load().in_flight),
                    endpoints=len(route.paths),
                )
            )
        return rows

    def asset(self, path: str, if_none_match: str | None) -> web.Response | None:
        """A static asset under ``/_yurt/playground/``, open to anyone; None: no such file."""
        found = self.assets.get(path.removeprefix(ASSET_PREFIX))
        if found is None:
            return None
        headers = {"cache-control": ASSET_CACHE, "etag": f'"{found.etag}"'}
        if if_none_match == headers["etag"]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, content_type=found.content_type, headers=headers)
