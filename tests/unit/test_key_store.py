"""API keys: made once, kept as digests, checked from memory, revoked within the stated bound."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from yurt.errors import ConfigError
from yurt.keys import KeyStore, alias_problem, looks_like_key, parse_authorization, split_key


def test_a_created_key_verifies_and_its_secret_is_kept_nowhere(tmp_path: Path) -> None:
    """The key verifies as `Key id:secret`; the files hold its digest, never the secret."""
    store = KeyStore(tmp_path)
    info, key = store.create("API", "ci", now=100.0)
    key_id, secret = key.split(":")
    assert info.key_id == key_id and info.scope == "API" and info.alias == "ci"
    found = store.verify(f"Key {key}")
    assert found is not None and found.key_id == key_id and found.scope == "API"
    for path in tmp_path.iterdir():
        assert secret not in path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer x",
        "Key",
        "Key nothing",
        "Key 00000000-0000-0000-0000-000000000000:" + "0" * 48,
    ],
)
def test_what_is_not_a_live_key_does_not_verify(tmp_path: Path, header: str | None) -> None:
    """Missing, other schemes, malformed and unknown keys all verify as None."""
    store = KeyStore(tmp_path)
    store.create("API", None, now=1.0)
    assert store.verify(header) is None


def test_a_wrong_secret_for_a_known_id_does_not_verify(tmp_path: Path) -> None:
    """The id alone is not the key: a changed secret fails."""
    store = KeyStore(tmp_path)
    _, key = store.create("ADMIN", None, now=1.0)
    key_id, secret = key.split(":")
    wrong = ("1" if secret[0] != "1" else "2") + secret[1:]
    assert store.verify(f"Key {key_id}:{wrong}") is None
    assert store.verify(f"key {key}") is not None  # the scheme is case-insensitive


def test_revoke_takes_effect_at_once_here_and_within_refresh_for_a_sharer(
    tmp_path: Path,
) -> None:
    """A second store on the same data dir sees a revocation once `refresh` has passed."""
    here = KeyStore(tmp_path, refresh=0.05)
    there = KeyStore(tmp_path, refresh=0.05)
    info, key = here.create("API", None, now=1.0)
    assert there.verify(f"Key {key}") is not None
    assert here.revoke(info.key_id)
    assert here.verify(f"Key {key}") is None
    deadline = time.monotonic() + 30
    while there.verify(f"Key {key}") is not None:
        assert time.monotonic() < deadline, "the sharer never saw the revocation"
    assert not here.revoke(info.key_id)


def test_a_damaged_file_keeps_the_last_keys_and_admin_calls_name_it(tmp_path: Path) -> None:
    """Garbage written over keys.json: verification keeps working, listing raises ConfigError."""
    store = KeyStore(tmp_path, refresh=0.0)
    _, key = store.create("API", None, now=1.0)
    assert store.verify(f"Key {key}") is not None
    (tmp_path / "keys.json").write_text("{not json")
    assert store.verify(f"Key {key}") is not None
    with pytest.raises(ConfigError, match=r"keys\.json"):
        store.list()


def test_list_shows_last_use_and_survives_a_flush(tmp_path: Path) -> None:
    """Use is kept in memory on the request path and written by flush_usage."""
    store = KeyStore(tmp_path)
    a, key_a = store.create("API", "a", now=1.0)
    b, _ = store.create("ADMIN", "b", now=2.0)
    assert [k.last_used for k in store.list()] == [None, None]
    store.verify(f"Key {key_a}")
    store.flush_usage()
    again = KeyStore(tmp_path).list()
    assert [k.key_id for k in again] == [a.key_id, b.key_id]
    assert again[0].last_used is not None and again[1].last_used is None
    assert [k.scope for k in again] == ["API", "ADMIN"]


def test_create_refuses_bad_scopes_and_aliases(tmp_path: Path) -> None:
    """An unknown scope or an alias with odd characters is a ConfigError naming the rule."""
    store = KeyStore(tmp_path)
    with pytest.raises(ConfigError, match="scope"):
        store.create("ROOT", None, now=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alias"):
        store.create("API", "a\nb", now=1.0)
    assert alias_problem("laptop of ann") is None
    assert alias_problem("x" * 65) is not None
    assert not (tmp_path / "keys.json").exists()


def test_parsing_is_pure_and_strict() -> None:
    """Only `Key <uuid>:<48 hex>` parses; looks_like_key tells a key from a bearer token."""
    key = "0f8fad5b-d9cb-469f-a165-70867728950e:" + "ab" * 24
    assert split_key(key) == tuple(key.split(":"))
    assert parse_authorization(f"Key {key}") == tuple(key.split(":"))
    assert parse_authorization(f"Bearer {key}") is None
    assert looks_like_key(key) and not looks_like_key("a-long-admin-token")
    assert split_key(key.upper()) is None


def test_between_refreshes_keys_are_checked_from_memory(tmp_path: Path) -> None:
    """The file is looked at once per refresh, not per call: the key check does no I/O."""
    store = KeyStore(tmp_path, refresh=3600)
    _, key = store.create("API", None, now=1.0)
    (tmp_path / "keys.json").unlink()  # a look at the file now would find no keys
    assert store.verify(f"Key {key}") is not None


def test_keys_stay_on_when_the_last_key_is_revoked(tmp_path: Path) -> None:
    """Keys are on from the first key made until keys.json is removed, revoked keys or not."""
    store = KeyStore(tmp_path, refresh=0.0)
    assert not store.any()
    info, _ = store.create("API", None, now=1.0)
    assert store.any()
    store.revoke(info.key_id)
    assert store.any() and store.list() == []
    (tmp_path / "keys.json").unlink()
    assert not store.any()


def test_app_tokens_name_their_apps_expire_and_die_with_their_key(tmp_path: Path) -> None:
    """A token verifies for its apps until it expires, and not once its key is revoked."""
    from yurt.keys import MAX_TOKEN_S, AppTokens

    store = KeyStore(tmp_path, refresh=0.0)
    info, _ = store.create("API", None, now=1.0)
    tokens = AppTokens(store)
    token = tokens.mint(info, ["a", "b"], 60, now=1000.0)
    assert tokens.verify(token, "a", now=1001.0) == info
    assert tokens.verify(token, "b", now=1060.0) == info
    assert tokens.verify(token, "c", now=1001.0) is None
    assert tokens.verify(token, "a", now=1061.0) is None
    long = tokens.mint(info, ["a"], 10**9, now=0.0)
    assert tokens.verify(long, "a", now=MAX_TOKEN_S + 1) is None
    store.revoke(info.key_id)
    assert tokens.verify(token, "a", now=1001.0) is None


def test_the_gates_cache_of_callers_follows_revocation_and_notes_use(tmp_path: Path) -> None:
    """The router's gate remembers whom an Authorization value names, but only while the keys
    are unchanged: a key revoked here is refused at once, by a sharer within `refresh`; each
    use through the cache is still noted for `list`."""
    from yurt.config import KeysConfig
    from yurt.router.gate import Gate
    from yurt.router.http import Reply

    here = KeyStore(tmp_path, refresh=0.05)
    there = KeyStore(tmp_path, refresh=0.05)
    gates = [
        Gate(store, KeysConfig(), host="127.0.0.1", public=False, admin_token="adm")
        for store in (here, there)
    ]
    info, key = here.create("API", None, now=1.0)
    _, other = here.create("API", None, now=2.0)
    shown = [(b"authorization", f"Key {key}".encode())]
    for gate in gates:
        first = gate.check("private", shown)
        assert not isinstance(first, Reply) and first.owner == info.key_id
        assert gate.check("private", shown) is first  # the second time, from the cache
    admin = gates[0].check("private", [(b"authorization", b"Bearer adm")])
    assert not isinstance(admin, Reply) and admin.admin
    assert here.revoke(info.key_id)
    refused = gates[0].check("private", shown)
    assert isinstance(refused, Reply) and refused.status == 401
    deadline = time.monotonic() + 30
    while not isinstance(gates[1].check("private", shown), Reply):
        assert time.monotonic() < deadline, "the sharer's gate never saw the revocation"
    still = gates[1].check("private", [(b"authorization", f"Key {other}".encode())])
    assert not isinstance(still, Reply) and still.key is not None
    there.flush_usage()
    used = {k.key_id: k.last_used for k in KeyStore(tmp_path).list()}
    assert used[still.key.key_id] is not None
