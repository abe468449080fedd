"""``yurt keys`` against a real ``yurt server``: keys made, listed and revoked through the admin
API, an ADMIN key standing in for the admin token, and the secret shown only once."""

from __future__ import annotations

import json
import secrets
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest

from support import running_yurt, yurt_command

API = "/_yurt/api/v1"
TOKEN = "admin-" + secrets.token_hex(8)

pytestmark = pytest.mark.timeout(300)


def yurt_server(tmp_path: Path) -> AbstractAsyncContextManager[str]:
    """``yurt server`` with an admin token; yields its URL and checks it stops cleanly."""
    args = ["server", "--port", "0", "--data-dir", str(tmp_path / "data"), "--admin-token", TOKEN]
    return running_yurt(args, tmp_path / "server.out", r"server at (http://\S+)")


async def keys(base: str, *args: str, token: str = TOKEN) -> tuple[int, str, str]:
    """``yurt keys ARGS --server BASE --token TOKEN``."""
    return await yurt_command("keys", *args, "--server", base, "--token", token)


async def test_keys_are_made_listed_used_and_revoked(tmp_path: Path) -> None:
    """create prints id:secret once; list shows it without the secret; an ADMIN key lists apps
    in place of the admin token; once revoked it is refused with 401."""
    async with yurt_server(tmp_path) as base:
        code, out, err = await keys(base, "create", "--scope", "ADMIN", "--alias", "ops")
        assert code == 0, err
        admin_key = out.strip()
        key_id, _, secret = admin_key.partition(":")
        code, out, err = await keys(base, "create", "--json")
        assert code == 0, err
        api_key = json.loads(out)["key"]

        async with aiohttp.ClientSession() as http:
            as_admin = {"Authorization": f"Key {admin_key}"}
            async with http.get(f"{base}{API}/apps", headers=as_admin) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(
                f"{base}{API}/keys", headers={"Authorization": f"Key {api_key}"}
            ) as r:
                assert r.status == 401
                assert (await r.json())["error_type"] == "unauthorized"
            async with http.post(
                f"{base}{API}/keys", headers=as_admin, json={"alias": "bad\nalias"}
            ) as resp:
                assert resp.status == 422
                assert (await resp.json())["error_type"] == "bad_request"

        code, out, err = await keys(base, "list", "--json", token=admin_key)
        assert code == 0, err
        listed = json.loads(out)
        assert [(k["scope"], k["alias"]) for k in listed] == [("ADMIN", "ops"), ("API", None)]
        assert listed[0]["key_id"] == key_id and listed[0]["last_used"] is not None
        assert secret not in out

        code, out, err = await keys(base, "revoke", key_id)
        assert code == 0, err
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base}{API}/apps", headers={"Authorization": f"Key {admin_key}"}) as resp,
        ):
            assert resp.status == 401
        code, _, err = await keys(base, "revoke", key_id)
        assert code == 1 and "no key" in err and "yurt keys list" in err

    for path in (tmp_path / "data").iterdir():
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


async def test_keys_on_a_data_dir_directly(tmp_path: Path) -> None:
    """--data-dir makes, lists and revokes keys with no server, as a `yurt run` reads them."""
    data = ["--data-dir", str(tmp_path / "data")]
    code, out, err = await yurt_command("keys", "create", "--alias", "laptop", *data)
    assert code == 0, err
    key_id = out.strip().partition(":")[0]
    code, out, err = await yurt_command("keys", "list", *data)
    assert code == 0 and key_id in out and "laptop" in out and "never used" in out, err
    code, out, err = await yurt_command("keys", "revoke", key_id, *data)
    assert code == 0, err
    code, out, err = await yurt_command("keys", "list", "--json", *data)
    assert code == 0 and json.loads(out) == [], err
