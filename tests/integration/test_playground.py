"""The playground's pages through a real router, over real HTTP (the browser tests drive them in
Chromium): what is served to whom, with which hooks, and what API clients still get."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from yurt.config import KeysConfig
from yurt.keys import KeyStore
from yurt.platform import Platform

from access_apps import Private, Public
from support import DEADLINE, fast_config

pytestmark = pytest.mark.timeout(240)

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[Platform, str, aiohttp.ClientSession]]:
    """Private and Public on one router whose data dir holds an API key (so Private wants
    one): the platform, the key, and a session."""
    data = tmp_path / "data"
    made = KeyStore(data).create("API", "a", time.time())[1]
    platform = Platform(fast_config(data).model_copy(update={"keys": KeysConfig()}))
    await platform.start(Private, Public)
    try:
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield platform, made, session
    finally:
        await platform.stop()


async def get(
    s: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    async with s.get(url, headers=headers or {}, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_the_index_lists_apps_with_counts_and_no_runner_address(tmp_path: Path) -> None:
    """A browser's ``GET /`` lists each app with its runners and queue, and no runner address."""
    async with serving(tmp_path) as (p, _, s):
        async with s.post(f"{p.url}/default/public", json={"prompt": "warm"}) as resp:
            assert resp.status == 200  # a runner now exists, with an address to keep hidden
        status, body, headers = await get(s, p.url + "/", HTML)
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert '<table data-role="apps">' in body
        rows = dict(re.findall(r'<tr data-app="([^"]+)">(.*?)</tr>', body))
        assert set(rows) == {"default/private", "default/public"}
        public = rows["default/public"]
        assert 'href="/default/public/playground"' in public
        assert re.search(r'data-role="runners">1<', public)
        assert re.search(r'data-role="queued">0<', public)
        assert 'data-role="access">key<' in rows["default/private"]
        # Who may not call a private app does not learn how busy it is.
        assert not re.search(r'data-role="(runners|queued|running)">\d', rows["default/private"])
        (described,) = [a for a in p.router.describe() if a["app_id"] == "default/public"]
        for runner in described["runners"]:  # type: ignore[attr-defined]
            assert f":{runner['port']}" not in body and f">{runner['pid']}<" not in body
        assert "runner_id" not in body


async def test_api_clients_get_what_they_got_before(tmp_path: Path) -> None:
    """Without text/html in Accept, ``GET /`` and ``GET /{owner}/{app}`` answer as before."""
    async with serving(tmp_path) as (p, _, s):
        for accept in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
            async with s.get(p.url + "/", headers=accept) as resp:
                assert resp.status == 404
                assert (await resp.json())["error_type"] == "not_found"
            async with s.get(p.url + "/default/public", headers=accept) as resp:
                assert resp.status == 405
                assert (await resp.json())["error_type"] == "method_not_allowed"
        # The queue and the sync path are untouched by a browser's Accept.
        async with s.post(p.url + "/default/public", json={"prompt": "x"}, headers=HTML) as resp:
            assert resp.status == 200 and await resp.json() == {"text": "public: x"}


async def test_a_browser_opening_an_app_is_sent_to_its_page(tmp_path: Path) -> None:
    """A browser's ``GET /{owner}/{app}`` is a 303 to its page; an unknown app stays a 404."""
    async with serving(tmp_path) as (p, _, s):
        status, _, headers = await get(s, p.url + "/default/public", HTML)
        assert status == 303 and headers["location"] == "/default/public/playground"
        status, _, _ = await get(s, p.url + "/default/nobody", HTML)
        assert status == 404
        status, _, _ = await get(s, p.url + "/default/nobody/playground", HTML)
        assert status == 404


async def test_a_public_apps_page_carries_its_schema_and_the_hooks(tmp_path: Path) -> None:
    """The page of a public app is HTML naming the app, its assets, and its OpenAPI document."""
    async with serving(tmp_path) as (p, _, s):
        status, body, headers = await get(s, p.url + "/default/public/playground", HTML)
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert '<h1 data-role="app-name">default/public</h1>' in body
        assert re.search(r'<script defer src="/_yurt/playground/playground\.js\?v=\w+">', body)
        assert re.search(r'<link rel="stylesheet" href="/_yurt/playground/playground\.css', body)
        assert 'id="yurt-openapi"' in body and '"Prompt"' in body
        assert 'data-role="key"' not in body
        assert "http://" not in body and "https://" not in body  # nothing from elsewhere
        # Only the package's script runs, and no other site may frame the page.
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


async def test_a_private_apps_schema_is_not_readable_without_a_key(tmp_path: Path) -> None:
    """A private app's page asks for a key and holds no schema; openapi.json wants the key."""
    async with serving(tmp_path) as (p, key, s):
        status, body, _ = await get(s, p.url + "/default/private/playground", HTML)
        assert status == 200
        assert '<input id="yurt-key" data-role="key" type="password"' in body
        assert '<label for="yurt-key">' in body and 'data-action="save-key"' in body
        assert 'id="yurt-openapi"' not in body and "Prompt" not in body
        status, _, _ = await get(s, p.url + "/default/private/openapi.json")
        assert status == 401
        auth = {"Authorization": f"Key {key}"}
        status, doc, _ = await get(s, p.url + "/default/private/openapi.json", auth)
        assert status == 200 and '"Prompt"' in doc


async def test_assets_are_served_to_anyone_with_a_cache_header(tmp_path: Path) -> None:
    """The script and stylesheet come from the package, cacheable, with an ETag and a 304."""
    async with serving(tmp_path) as (p, _, s):
        for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
            url = f"{p.url}/_yurt/playground/{name}"
            status, body, headers = await get(s, url)
            assert status == 200 and headers["content-type"].startswith(kind)
            assert "max-age=" in headers["cache-control"] and body
            status, _, _ = await get(s, url, {"If-None-Match": headers["etag"]})
            assert status == 304
        status, _, _ = await get(s, f"{p.url}/_yurt/playground/nothing.js")
        assert status == 404


async def test_the_page_is_served_on_a_connection_the_fast_lane_began(tmp_path: Path) -> None:
    """A keep-alive connection may run an app, then load a page, then run again."""
    async with serving(tmp_path) as (p, _, s):
        for _ in range(2):
            async with s.post(f"{p.url}/default/public", json={"prompt": "a"}) as resp:
                assert resp.status == 200
            status, body, _ = await get(s, p.url + "/default/public/playground", HTML)
            assert status == 200 and "data-app" in body


async def exchange(url: str, *requests: bytes) -> bytes:
    """Send raw HTTP/1.1 requests on one connection (the last says ``Connection: close``) and
    return every byte the router answered, so that a body sent after a HEAD would show."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        return await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()


def raw(method: str, path: str, *, close: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {HTML['Accept']}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode()


async def test_head_answers_each_page_as_get_without_a_body(tmp_path: Path) -> None:
    """HEAD of the index, an app's page, an app's address and an asset has GET's status and
    headers and no body: the next response on the connection follows the headers at once."""
    async with serving(tmp_path) as (p, _, s):
        _, page, _ = await get(s, p.url + "/default/public/playground", HTML)
        found = re.search(r'src="(/_yurt/playground/playground\.js\?v=\w+)"', page)
        assert found is not None
        js = found.group(1)
        for path in ("/", "/default/public/playground", "/default/public", js):
            async with s.get(p.url + path, headers=HTML, allow_redirects=False) as got:
                body = await got.read()
            wire = await exchange(p.url, raw("HEAD", path), raw("GET", path, close=True))
            head, sep, rest = wire.partition(b"\r\n\r\n")
            assert sep and head.startswith(f"HTTP/1.1 {got.status} ".encode()), (path, wire[:200])
            # The GET that followed begins right after the HEAD's headers: no body between.
            assert rest.startswith(f"HTTP/1.1 {got.status} ".encode()), (path, rest[:200])
            lines = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
            fields = {k.lower(): v for k, v in lines.items()}
            assert fields.get("content-type") == got.headers.get("content-type"), path
            if got.status == 200:
                assert int(fields["content-length"]) == len(body) > 0, path
            assert rest.endswith(body), path
