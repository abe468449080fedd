"""API keys: what callers send as ``Authorization: Key <id>:<secret>``, as fal's clients do.

A key is made once (``yurt keys create``) and shown once; the server keeps only an HMAC-SHA256
of it under a key of its own (``DATA_DIR/keys-key``), in ``DATA_DIR/keys.json`` (``0600``).
An HMAC rather than a slow password hash: the secret is 192 random bits, not a password a
dictionary could guess, so a fast digest gives nothing away and checks a request in
microseconds. The store keeps the keys in memory and reads the file again when it changed
(another router sharing the data dir revoked one), looking at most every ``refresh`` seconds:
a key revoked through this server stops working at once, through another within ``refresh``.

Scopes, as fal's: ``API`` calls apps; ``ADMIN`` also does whatever the admin token does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from yurt.errors import ConfigError
from yurt.privatefs import load_secret, write_atomic

Scope = Literal["API", "ADMIN"]
SCOPES: tuple[Scope, ...] = ("API", "ADMIN")
MAX_ALIAS = 64
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.@-]*$")
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SECRET = re.compile(r"^[0-9a-f]{48}$")
_VERIFIED_MAX = 4096  # verified Authorization values kept; beyond it the cache starts over


class _Entry(BaseModel):
    """One key as the file keeps it: never its secret, only the digest of the whole key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str | None
    scope: Scope
    created_at: float
    digest: str  # hex HMAC-SHA256 of "<id>:<secret>" under the server's keys-key


_ENTRIES = TypeAdapter(dict[str, _Entry])
_USED = TypeAdapter(dict[str, float])


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as ``list`` shows it and a request carries it: never its secret."""

    key_id: str
    alias: str | None
    scope: Scope
    created_at: float  # Unix time
    last_used: float | None = None


def split_key(value: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a key written ``id:secret``, or None when it is not one. Pure."""
    key_id, sep, secret = value.strip().partition(":")
    if not sep or not _ID.match(key_id) or not _SECRET.match(secret):
        return None
    return key_id, secret


def looks_like_key(value: str) -> bool:
    """Whether ``value`` is written as a key is (so a client sends it as ``Key``). Pure."""
    return split_key(value) is not None


def parse_authorization(header: str) -> tuple[str, str] | None:
    """The key in an ``Authorization: Key <id>:<secret>`` header, or None. Pure.

    The scheme is case-insensitive (RFC 9110 section 11.1).
    """
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "key":
        return None
    return split_key(rest)


def alias_problem(alias: str) -> str | None:
    """Why ``alias`` cannot name a key, or None. Pure."""
    if len(alias) > MAX_ALIAS or not _ALIAS.match(alias):
        return (
            f"alias {alias[:MAX_ALIAS]!r}: letters, digits, spaces and '_.@-', starting with a "
            f"letter or digit, at most {MAX_ALIAS} characters"
        )
    return None


class KeyStore:
    """The server's API keys under ``data_dir``.

    ``verify`` is what the request path calls; it reads no file more often than every
    ``refresh`` seconds, and hashes an HMAC only for an ``Authorization`` value it has not
    verified since the file was last read.
    """

    def __init__(self, data_dir: Path, *, refresh: float = 1.0) -> None:
        self.path = data_dir / "keys.json"
        self.used_path = data_dir / "keys-used.json"
        self.key_path = data_dir / "keys-key"
        self.refresh = refresh
        self._hmac_key: bytes | None = None
        self._entries: dict[str, _Entry] = {}
        self._stamp: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) read last
        self._checked = float("-inf")
        # Last use not yet written to used_path, on the monotonic clock (``_used_wall``).
        self._used: dict[str, float] = {}
        self._loaded = False
        # Authorization values verified since the keys were last read: the next request with
        # the same header skips the parse and the HMAC. Emptied on every read of the file.
        self._verified: dict[str, KeyInfo] = {}
        # Counts the reads of the file that may have changed the keys: what a cache of
        # verified keys kept elsewhere (the router's gate) is valid for.
        self.generation = 0

    # -- the request path ------------------------------------------------------------------

    def any(self) -> bool:
        """Whether keys are on: a key was ever made here (then private apps need one).

        Revoking the last key leaves keys on, with none that works: a private app stays
        closed rather than opening to everyone. Removing ``keys.json`` turns keys off.
        """
        self._maybe_reload()
        return self._stamp is not None

    def generation_now(self) -> int:
        """``generation`` after a look at the file, when one is due."""
        self._maybe_reload()
        return self.generation

    def use(self, key_id: str) -> int:
        """Note a use of ``key_id``, verified before, and return ``generation`` after a look at
        the file when one is due: the request path's check that such a key is still live
        (revoked here: at once; elsewhere: within ``refresh`` seconds). One read of the clock."""
        now = time.monotonic()
        if now - self._checked >= self.refresh or not self._loaded:
            self._maybe_reload()
        self._used[key_id] = now
        return self.generation

    def verify(self, authorization: str | None) -> KeyInfo | None:
        """The key an ``Authorization`` header carries, when it is a live key of this server."""
        if not authorization:
            return None
        self._maybe_reload()
        info = self._verified.get(authorization)
        if info is None:
            parsed = parse_authorization(authorization)
            if parsed is None:
                return None
            entry = self._entries.get(parsed[0])
            if entry is None or not hmac.compare_digest(entry.digest, self._digest(*parsed)):
                return None
            info = KeyInfo(parsed[0], entry.alias, entry.scope, entry.created_at)
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[authorization] = info
        self._used[info.key_id] = time.monotonic()
        return info

    def _maybe_reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._loaded and now - self._checked < self.refresh:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None or not self._loaded:
                self.generation += 1
            self._entries, self._stamp, self._loaded = {}, None, True
            self._verified.clear()
            return
        except OSError:
            if not self._loaded:
                raise
            return  # unreadable for now: keep the keys read last
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and self._loaded:
            return
        self._verified.clear()
        self.generation += 1
        try:
            self._entries = self._read()
        except ConfigError:
            if not self._loaded:
                raise
            # A damaged file keeps the keys read last (a partial write cannot happen: writes
            # are renamed into place); the admin calls raise it to whoever can fix it.
            return
        self._stamp, self._loaded = stamp, True

    def get(self, key_id: str) -> KeyInfo | None:
        """A live key by its id (what a token names)."""
        self._maybe_reload()
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        return KeyInfo(key_id, entry.alias, entry.scope, entry.created_at)

    def sign(self, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` under the server's key (hex)."""
        if self._hmac_key is None:
            self._hmac_key = load_secret(self.key_path)
        return hmac.new(self._hmac_key, message, hashlib.sha256).hexdigest()

    def _digest(self, key_id: str, secret: str) -> str:
        if self._hmac_key is None:
            self._hmac_key = load_secret(self.key_path)
        message = f"{key_id}:{secret}".encode()
        return hmac.new(self._hmac_key, message, hashlib.sha256).hexdigest()

    # -- administration --------------------------------------------------------------------

    def _read(self) -> dict[str, _Entry]:
        try:
            return _ENTRIES.validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValidationError as exc:
            raise ConfigError(
                f"{self.path} is not a file of API keys ({exc.error_count()} errors); move it "
                "away and create the keys again"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the API keys in {self.path}: {exc}") from exc

    def _write(self, entries: dict[str, _Entry]) -> None:
        write_atomic(self.path, _ENTRIES.dump_json(entries, indent=1))
        self._maybe_reload(force=True)

    def create(self, scope: Scope, alias: str | None, now: float) -> tuple[KeyInfo, str]:
        """Make a key; returns it and ``id:secret``, the only time the secret is seen."""
        if scope not in SCOPES:
            raise ConfigError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        if alias is not None and (problem := alias_problem(alias)) is not None:
            raise ConfigError(problem)
        key_id, secret = str(uuid.uuid4()), secrets.token_hex(24)
        entries = self._read()
        entry = _Entry(
            alias=alias, scope=scope, created_at=now, digest=self._digest(key_id, secret)
        )
        entries[key_id] = entry
        self._write(entries)
        return KeyInfo(key_id, alias, scope, now), f"{key_id}:{secret}"

    def revoke(self, key_id: str) -> bool:
        """Remove a key; False when there is none of that id. Takes effect at once here."""
        entries = self._read()
        if entries.pop(key_id, None) is None:
            return False
        self._write(entries)
        self._used.pop(key_id, None)
        return True

    def list(self) -> list[KeyInfo]:
        """Every key, oldest first, with when it was last used (as far as this server knows)."""
        entries = self._read()
        used = {**self._read_used(), **self._used_wall()}
        found = [
            KeyInfo(key_id, e.alias, e.scope, e.created_at, used.get(key_id))
            for key_id, e in entries.items()
        ]
        return sorted(found, key=lambda k: (k.created_at, k.key_id))

    def flush_usage(self) -> None:
        """Write when keys were last used (kept in memory between calls: the request path
        writes nothing)."""
        if not self._used:
            return
        known = self._read()
        merged = {k: t for k, t in {**self._read_used(), **self._used_wall()}.items() if k in known}
        write_atomic(self.used_path, json.dumps(merged, indent=1).encode())
        self._used.clear()

    def _used_wall(self) -> dict[str, float]:
        """``_used`` in Unix time."""
        offset = time.time() - time.monotonic()
        return {key_id: at + offset for key_id, at in self._used.items()}

    def _read_used(self) -> dict[str, float]:
        try:
            return _USED.validate_json(self.used_path.read_bytes())
        except (OSError, ValidationError):
            return {}  # a convenience only: a lost or damaged file forgets when keys were used


# -- short-lived app tokens (fal's realtime tokens) ---------------------------------------------

MAX_TOKEN_S = 3600  # the longest a token may live, whatever is asked
_TOKEN = re.compile(r"^yt1\.(\d{1,12})\.([0-9a-f-]{36})\.([A-Za-z0-9_.,-]{1,512})\.([0-9a-f]{64})$")


def token_message(expires: int, key_id: str, apps: str) -> bytes:
    """What a token's HMAC covers. Pure."""
    return f"token:{expires}:{key_id}:{apps}".encode()


class AppTokens:
    """Tokens a key hands to a browser or a websocket client: good for some apps for a while.

    fal's clients ask ``POST /tokens/`` with a key before a realtime websocket and send the
    token as ``?fal_jwt_token=``; yurt's are ``yt1.<expiry>.<key id>.<apps>.<hmac>``, signed
    with the key store's server key, not JWTs (nothing reads inside them but the router). A
    token dies with its key: revoking the key ends every token it made.
    """

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def mint(self, key: KeyInfo, apps: list[str], seconds: int, now: float) -> str:
        """A token for ``apps`` (app names, fal's aliases) living ``seconds`` (capped)."""
        expires = int(now) + max(1, min(seconds, MAX_TOKEN_S))
        names = ",".join(sorted(set(apps)))
        sig = self.keys.sign(token_message(expires, key.key_id, names))
        return f"yt1.{expires}.{key.key_id}.{names}.{sig}"

    def verify(self, token: str, app_name: str, now: float) -> KeyInfo | None:
        """The key behind ``token`` when it is valid, unexpired, for ``app_name`` and its key
        is still live; else None."""
        found = _TOKEN.match(token)
        if found is None:
            return None
        expires, key_id, names, sig = found.groups()
        if int(expires) < now or app_name not in names.split(","):
            return None
        expected = self.keys.sign(token_message(int(expires), key_id, names))
        if not hmac.compare_digest(sig, expected):
            return None
        return self.keys.get(key_id)
