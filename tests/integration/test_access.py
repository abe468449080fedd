"""Keys and access through a real router and runners: private apps want a key, a request is
its key's, public apps are open, yurt's own routes want an admin, quotas answer 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from yurt.config import KeysConfig
from yurt.keys import KeyStore
from yurt.platform import Platform

from access_apps import Private, Public
from support import DEADLINE, fast_config, wait_until

pytestmark = pytest.mark.timeout(240)


class Keys:
    """Keys made in the data dir before the server starts: two API keys and an ADMIN one."""

    def __init__(self, data_dir: Path) -> None:
        store = KeyStore(data_dir)
        self.a = store.create("API", "a", time.time())[1]
        self.b = store.create("API", "b", time.time())[1]
        self.admin = store.create("ADMIN", "ops", time.time())[1]

    @staticmethod
    def auth(key: str | None) -> dict[str, str]:
        return {} if key is None else {"Authorization": f"Key {key}"}


@asynccontextmanager
async def serving(
    tmp_path: Path, keys: KeysConfig | None = None
) -> AsyncIterator[tuple[Platform, Keys, aiohttp.ClientSession]]:
    """Private and Public served on one router whose data dir holds keys."""
    data = tmp_path / "data"
    made = Keys(data)
    config = fast_config(data).model_copy(update={"keys": keys or KeysConfig()})
    platform = Platform(config)
    await platform.start(Private, Public)
    try:
        timeout = aiohttp.ClientTimeout(total=DEADLINE)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield platform, made, session
    finally:
        await platform.stop()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, key: str | None, **kw: Any
) -> tuple[int, Any, Any]:
    async with session.request(method, url, headers=Keys.auth(key), **kw) as resp:
        body = await resp.json(content_type=None) if method != "STREAM" else None
        return resp.status, body, resp.headers


async def test_a_private_app_wants_a_key_and_a_public_one_does_not(tmp_path: Path) -> None:
    """No key or a wrong one: 401 on sync and queue calls to the private app, in JSON; a key
    passes; the public app answers without one."""
    async with serving(tmp_path) as (p, keys, s):
        private, public = f"{p.url}/default/private", f"{p.url}/default/public"
        wrong = keys.a[:-1] + ("0" if keys.a[-1] != "0" else "1")
        for key in (None, wrong, "not-a-key"):
            for url in (private, f"{p.url}/queue/default/private"):
                status, body, headers = await call(s, "POST", url, key, json={"prompt": "x"})
                assert status == 401, (url, key)
                assert body["error_type"] == "unauthorized" and "Key" in body["detail"]
                assert headers["www-authenticate"].startswith("Key")
        status, body, _ = await call(s, "POST", private, keys.a, json={"prompt": "x"})
        assert (status, body) == (200, {"text": "private: x"})
        status, body, _ = await call(s, "POST", public, None, json={"prompt": "y"})
        assert (status, body) == (200, {"text": "public: y"})


async def test_a_request_is_its_keys_alone(tmp_path: Path) -> None:
    """Submitted with key A: 404 for key B and for no key on status, result, stream and
    cancel, as for an unknown id; key A and an ADMIN key see it."""
    async with serving(tmp_path) as (p, keys, s):
        queue = f"{p.url}/queue/default/private"
        status, sub, _ = await call(s, "POST", queue, keys.a, json={"prompt": "mine"})
        assert status == 200
        url = sub["response_url"]

        async def done() -> bool:
            status, body, _ = await call(s, "GET", f"{url}/status", keys.a)
            return status == 200 and body["status"] == "COMPLETED"

        await wait_until(done, what="the request to complete")
        unknown = url.rsplit("/", 1)[0] + "/" + "0" * 32
        for key in (keys.b, None):
            for target in (url, unknown):
                for method, tail in (("GET", ""), ("GET", "/status"), ("GET", "/status/stream")):
                    async with s.request(method, target + tail, headers=Keys.auth(key)) as resp:
                        assert resp.status == 404, (key, target + tail)
                        assert (await resp.json())["error_type"] == "request_not_found"
                status, body, _ = await call(s, "PUT", f"{target}/cancel", key)
                assert (status, body) == (404, {"status": "NOT_FOUND"})
        for key in (keys.a, keys.admin):
            status, body, _ = await call(s, "GET", url, key)
            assert (status, body) == (200, {"text": "private: mine"})


async def test_a_public_apps_request_id_is_its_capability(tmp_path: Path) -> None:
    """A public app's request, submitted with a key or without, is readable by its id alone."""
    async with serving(tmp_path) as (p, keys, s):
        for submitter in (keys.a, None):
            status, sub, _ = await call(
                s, "POST", f"{p.url}/queue/default/public", submitter, json={"prompt": "p"}
            )
            assert status == 200
            body = await wait_until(
                lambda sub=sub: _result(s, sub["response_url"], keys.b), what="the result"
            )
            assert body == {"text": "public: p"}


async def _result(s: aiohttp.ClientSession, url: str, key: str | None) -> Any:
    status, body, _ = await call(s, "GET", url, key)
    return body if status == 200 else None


async def test_own_routes_want_an_admin_once_keys_are_on(tmp_path: Path) -> None:
    """/_yurt/apps: 401 with no key and with an API key, 200 with an ADMIN key; /_yurt/health
    is open; /_yurt/metrics is open to a loopback caller."""
    async with serving(tmp_path) as (p, keys, s):
        for key in (None, keys.a):
            status, body, _ = await call(s, "GET", f"{p.url}/_yurt/apps", key)
            assert status == 401 and body["error_type"] == "unauthorized"
        status, body, _ = await call(s, "GET", f"{p.url}/_yurt/apps", keys.admin)
        assert status == 200 and {a["app_id"] for a in body} >= {"default/private"}
        async with s.get(f"{p.url}/_yurt/health") as resp:
            assert resp.status == 200
        async with s.get(f"{p.url}/_yurt/metrics") as resp:
            assert resp.status == 200


async def test_metrics_for_admins_only_when_configured(tmp_path: Path) -> None:
    """[keys] metrics = "admin": a loopback scraper needs the ADMIN key too."""
    async with serving(tmp_path, KeysConfig(metrics="admin")) as (p, keys, s):
        async with s.get(f"{p.url}/_yurt/metrics") as resp:
            assert resp.status == 401
        async with s.get(f"{p.url}/_yurt/metrics", headers=Keys.auth(keys.admin)) as resp:
            assert resp.status == 200


async def test_a_key_over_its_rate_gets_429_and_loses_nothing(tmp_path: Path) -> None:
    """Rate 0.2/s with a burst of 2: the third submission at once gets 429 with Retry-After;
    the two taken complete; another key is not held back."""
    async with serving(tmp_path, KeysConfig(rate=0.2, burst=2)) as (p, keys, s):
        queue = f"{p.url}/queue/default/private"
        taken = []
        for n in range(2):
            status, sub, _ = await call(s, "POST", queue, keys.a, json={"prompt": f"q{n}"})
            assert status == 200
            taken.append(sub)
        status, body, headers = await call(s, "POST", queue, keys.a, json={"prompt": "over"})
        assert status == 429 and body["error_type"] == "rate_limited"
        assert int(headers["retry-after"]) >= 1
        status, _, _ = await call(
            s, "POST", f"{p.url}/default/private", keys.a, json={"prompt": "sync"}
        )
        assert status == 429  # the sync path counts against the same rate
        status, _, _ = await call(s, "POST", queue, keys.b, json={"prompt": "b"})
        assert status == 200
        results = await asyncio.gather(
            *(
                wait_until(lambda sub=sub: _result(s, sub["response_url"], keys.a), what="a result")
                for sub in taken
            )
        )
        assert results == [{"text": "private: q0"}, {"text": "private: q1"}]


async def test_a_key_at_its_cap_of_unfinished_requests_waits(tmp_path: Path) -> None:
    """unfinished = 1: while one request of the key is unfinished the next gets 429; once it
    completes the key may submit again."""
    async with serving(tmp_path, KeysConfig(unfinished=1)) as (p, keys, s):
        queue = f"{p.url}/queue/default/private"
        status, sub, _ = await call(s, "POST", queue, keys.a, json={"prompt": "one"})
        assert status == 200
        status, body, _ = await call(s, "POST", queue, keys.a, json={"prompt": "two"})
        # Unless the first finished already (a fast runner): then the second is taken.
        if status == 429:
            assert "unfinished" in body["detail"]
        await wait_until(lambda: _result(s, sub["response_url"], keys.a), what="the first result")

        async def taken() -> bool:
            status, _, _ = await call(s, "POST", queue, keys.a, json={"prompt": "again"})
            return status == 200

        await wait_until(taken, what="a submission once the first completed")


async def test_beyond_loopback_private_apps_want_keys_before_the_first(tmp_path: Path) -> None:
    """A router on every address with no key made yet: the private app answers 401 (naming
    `yurt keys create`), the public one answers; with --public both answer. Called on
    127.0.0.1, as every test's traffic is."""
    for public, private_status in ((False, 401), (True, 200)):
        data = tmp_path / f"data-{public}"
        platform = Platform(fast_config(data, host="0.0.0.0", public=public))
        await platform.start(Private, Public)
        try:
            base = f"http://127.0.0.1:{platform.router.port}"
            async with aiohttp.ClientSession() as s:
                status, body, _ = await call(
                    s, "POST", f"{base}/default/private", None, json={"prompt": "x"}
                )
                assert status == private_status, body
                if status == 401:
                    assert "yurt keys create" in body["detail"]
                status, _, _ = await call(
                    s, "POST", f"{base}/default/public", None, json={"prompt": "x"}
                )
                assert status == 200
        finally:
            await platform.stop()


async def test_a_token_from_tokens_stands_for_its_key_on_its_apps(tmp_path: Path) -> None:
    """POST /tokens/ with a key gives a token (a JSON string, as fal's clients read it) that
    calls the named app through ?fal_jwt_token= and no other; without a key, 401; a revoked
    key's token stops working."""
    async with serving(tmp_path) as (p, keys, s):
        asked = {"allowed_apps": ["private"], "token_expiration": 60}
        status, body, _ = await call(s, "POST", f"{p.url}/tokens/", None, json=asked)
        assert status == 401 and body["error_type"] == "unauthorized"
        status, token, _ = await call(s, "POST", f"{p.url}/tokens/", keys.a, json=asked)
        assert status == 201 and isinstance(token, str)
        url = f"{p.url}/default/private"
        status, body, _ = await call(
            s, "POST", url, None, params={"fal_jwt_token": token}, json={"prompt": "t"}
        )
        assert (status, body) == (200, {"text": "private: t"})
        tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
        for bad in (tampered, "yt1.1.x.private.00"):
            status, _, _ = await call(
                s, "POST", url, None, params={"fal_jwt_token": bad}, json={"prompt": "t"}
            )
            assert status == 401
        status, _, _ = await call(s, "POST", f"{p.url}/tokens/", keys.a, json={"x": 1})
        assert status == 422
        # Revoking the key ends its tokens (the server's store is told at once).
        assert KeyStore(tmp_path / "data").revoke(keys.a.partition(":")[0])

        async def refused() -> bool:
            status, _, _ = await call(
                s, "POST", url, None, params={"fal_jwt_token": token}, json={"prompt": "t"}
            )
            return status == 401

        await wait_until(refused, what="the revoked key's token refused")


async def test_a_private_apps_openapi_and_websocket_want_a_key(tmp_path: Path) -> None:
    """GET /{owner}/{app}/openapi.json of the private app: 401 without a key, 200 with one;
    the public app's is open. A websocket upgrade to the private app without a key: 401."""
    async with serving(tmp_path) as (p, keys, s):
        doc = f"{p.url}/default/private/openapi.json"
        status, body, _ = await call(s, "GET", doc, None)
        assert status == 401 and body["error_type"] == "unauthorized"
        status, body, _ = await call(s, "GET", doc, keys.a)
        assert status == 200 and body["openapi"].startswith("3.")
        status, _, _ = await call(s, "GET", f"{p.url}/default/public/openapi.json", None)
        assert status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(f"{p.url}/default/private")
        assert refused.value.status == 401
