"""The router's gate: who a request comes from, whether it may call the app, and its quota.

``yurt.access`` decides; this module reads the request's ``Authorization`` header, asks the key
store, and keeps the per-key quotas. A request with no ``Authorization`` header on a server
with no keys costs a scan of its header names and nothing else.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from yurt.access import (
    ANONYMOUS,
    PRIVATE_DETAIL,
    Caller,
    is_loopback,
    may_call,
)
from yurt.config import KeysConfig
from yurt.keys import AppTokens, KeyStore
from yurt.quota import Limits, Quotas
from yurt.router.admitted import UNKNOWN, Unknown
from yurt.router.http import Reply, error_reply

Header = tuple[bytes, bytes]
TOKEN_PARAM = "fal_jwt_token"  # where fal's clients put a token (``POST /tokens/``)


_CALLERS_MAX = 4096  # Authorization values whose callers the gate keeps; then it starts over


def authorization(headers: Sequence[Header]) -> bytes | None:
    """The request's ``Authorization`` header, if any (the first one)."""
    for name, value in headers:
        if len(name) == 13 and name.lower() == b"authorization":
            return value
    return None


class Gate:
    """Checks each request against the app's ``app_auth``, the keys and the quotas."""

    def __init__(
        self,
        keys: KeyStore | None,
        config: KeysConfig,
        *,
        host: str,
        public: bool,
        admin_token: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.tokens = AppTokens(keys) if keys is not None else None
        # Judged once: the request path must not parse an address per request.
        self.open_without_keys = public or is_loopback(host)
        self.admin_token = admin_token
        self.quotas = Quotas(Limits(config.rate, config.burst, config.unfinished))
        # Whether any quota is on, judged once (the limits come from the configuration).
        self.quotas_on = self.quotas.active
        self.metrics_access = config.metrics
        self.clock = clock
        # The caller each Authorization value shown lately names, while the keys are those of
        # ``_generation``: a request showing one again costs a lookup, not a parse and an
        # HMAC, nor a new Caller. A value naming no one is not kept.
        self._callers: dict[bytes, Caller] = {}
        self._generation = -1

    def keys_on(self) -> bool:
        """Whether apps that are not public want a key now (``yurt.access.keys_required``)."""
        if self.keys is not None and self.keys.any():
            return True
        return not self.open_without_keys  # keys_required(host, False, public), judged once

    def caller(self, headers: Sequence[Header], given: bytes | Unknown | None = UNKNOWN) -> Caller:
        """Who the request comes from: its key, or the admin token, or no one. ``given``: the
        ``Authorization`` value where the face noted it while parsing (None: the request has
        none); ``UNKNOWN`` has it looked up in ``headers``."""
        if given is UNKNOWN:
            given = authorization(headers)
        return ANONYMOUS if given is None else self.shown(given)

    def shown(self, given: bytes) -> Caller:
        """Who an ``Authorization`` value names: a live key, the admin token, or no one."""
        keys = self.keys
        caller = self._callers.get(given)
        if caller is not None:
            key = caller.key
            if key is None or keys is None or keys.use(key.key_id) == self._generation:
                return caller
        generation = keys.generation_now() if keys is not None else 0
        if generation != self._generation:
            self._callers.clear()
            self._generation = generation
        caller = self._named(given.decode("latin-1"))
        if caller is not ANONYMOUS:
            if len(self._callers) >= _CALLERS_MAX:
                self._callers.clear()
            self._callers[given] = caller
        return caller

    def _named(self, given: str) -> Caller:
        if self.keys is not None:
            key = self.keys.verify(given)
            if key is not None:
                return Caller(key, admin=key.scope == "ADMIN")
        scheme, _, token = given.partition(" ")
        if self.admin_token is not None and scheme.lower() == "bearer":
            same = hmac.compare_digest(
                token.strip().encode("utf-8", "surrogateescape"), self.admin_token.encode()
            )
            if same:
                return Caller(admin=True)
        return ANONYMOUS

    def check(
        self,
        app_auth: str,
        headers: Sequence[Header],
        query: str = "",
        app_id: str = "",
        *,
        known: Caller | None = None,
        given: bytes | Unknown | None = UNKNOWN,
    ) -> Caller | Reply:
        """The caller, or the 401 that refuses it. A request without ``Authorization`` may
        carry a token for the app in ``?fal_jwt_token=`` (fal's realtime clients do).
        ``known``: the caller ``caller(headers)`` already gave, not worked out again; ``given``
        as for ``caller``."""
        if known is not None:
            caller = known
        else:  # ``caller``, written out: this runs on every request
            if given is UNKNOWN:
                given = authorization(headers)
            caller = ANONYMOUS if given is None else self.shown(given)
        if caller.key is not None or caller.admin or app_auth == "public":
            return caller  # may_call: a key or the admin token calls any app; anyone a public one
        # keys_on(), written out: this runs on every request without a key.
        keys_on = (self.keys is not None and self.keys.any()) or not self.open_without_keys
        if not keys_on:
            return caller  # may_call: with keys off every app is open
        if TOKEN_PARAM in query:
            caller = self._token_caller(query, app_id)
        if not may_call(app_auth, keys_on, caller):
            shown = authorization(headers) is not None
            detail = "the key given is not a key of this server, or was revoked; " if shown else ""
            reply = error_reply(401, "unauthorized", detail + PRIVATE_DETAIL)
            reply.headers.append((b"www-authenticate", b'Key realm="yurt"'))
            return reply
        return caller

    def _token_caller(self, query: str, app_id: str) -> Caller:
        if self.tokens is None:
            return ANONYMOUS
        for name, value in parse_qsl(query):
            if name == TOKEN_PARAM:
                key = self.tokens.verify(value, app_id.rpartition("/")[2], time.time())
                if key is not None:
                    return Caller(key, admin=key.scope == "ADMIN")
        return ANONYMOUS

    def own_route(self, path: str, headers: Sequence[Header], peer: str | None) -> Reply | None:
        """The 401 refusing a call to yurt's own routes (``/_yurt/...``), or None.

        ``/_yurt/apps`` (every runner's address) wants the admin token or an ADMIN key once
        keys are on; ``/_yurt/metrics`` is open to loopback callers by default
        (``[keys] metrics``), and to the admin token and ADMIN keys (a scraper's bearer token
        or ``Authorization: Key``); the health check is open.
        """
        if path == "/_yurt/apps":
            if not self.keys_on() or self.caller(headers).admin:
                return None
            return self._admin_only(path)
        if path == "/_yurt/metrics":
            access = self.metrics_access
            if access == "open" or (access == "loopback" and peer and is_loopback(peer)):
                return None
            if self.caller(headers).admin:
                return None
            return self._admin_only(path)
        return None

    @staticmethod
    def _admin_only(path: str) -> Reply:
        reply = error_reply(
            401,
            "unauthorized",
            f"{path} wants the admin token (Authorization: Bearer) or an ADMIN key "
            "(Authorization: Key <id>:<secret>)",
        )
        reply.headers.append((b"www-authenticate", b'Key realm="yurt"'))
        return reply

    def take(self, caller: Caller) -> Reply | None:
        """Count one request against the caller's quota; the 429 when it is over. Admitted:
        ``give_back`` when the request is finished."""
        if caller.key is None or not self.quotas_on:
            return None
        refused = self.quotas.admit(caller.key.key_id, self.clock())
        if refused is None:
            return None
        reply = error_reply(429, "rate_limited", refused.reason)
        reply.headers.append((b"retry-after", refused.retry_after_header.encode()))
        return reply

    def give_back(self, owner: str | None) -> None:
        """A request ``take`` counted is finished."""
        if owner is not None and self.quotas_on:
            self.quotas.release(owner)
