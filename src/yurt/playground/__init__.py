"""The playground: a web page for every app, served by the router itself.

``GET /`` from a browser lists the apps; ``GET /{owner}/{app}/playground`` draws a form for each
endpoint from the app's OpenAPI document, runs it through the queue and shows the status, logs
and result. The pages are server-rendered HTML and one script and one stylesheet of yurt's own,
shipped in this package and served under ``/_yurt/playground/`` (``docs/playground.md``).

``routing.wants_page`` is all the request core asks (on ``GET`` and ``HEAD`` only); the rest
runs in the router's aiohttp face.
"""

from __future__ import annotations

from yurt.playground.routing import ASSET_PREFIX, wants_page
from yurt.playground.serve import Playground

__all__ = ["ASSET_PREFIX", "Playground", "wants_page"]
