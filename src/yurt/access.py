"""Who may call an app, and who owns a queued request: pure decisions over a request's key.

The model, as fal's ``app_auth`` has it:

- ``public``: anyone may call the app; a queued request's id is the capability to read, stream
  or cancel it (as on fal).
- ``private`` (the default) and ``shared``: once the server has any API key, a call needs one
  (``Authorization: Key <id>:<secret>``) and a queued request belongs to the key that made it:
  another key asking for it gets 404, as if it did not exist. yurt's keys all belong to the
  server's one account, so ``shared`` (fal: other accounts may call it) means what ``private``
  does. A server with no key at all is a one-person setup on loopback (a server reachable from
  elsewhere must have keys or be started ``--public``, see ``exposure_problem``): every app is
  open there.

The admin token and ADMIN keys may read and cancel any request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from yurt.keys import KeyInfo

PRIVATE_DETAIL = (
    "this app is private: send an API key as `Authorization: Key <id>:<secret>` (fal's "
    "FAL_KEY); `yurt keys create` makes one"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from: its key (None: none shown) and whether it is an admin."""

    key: KeyInfo | None = None
    admin: bool = False

    @property
    def owner(self) -> str | None:
        """Whom a queued request of this caller is recorded under: its key's id."""
        return None if self.key is None else self.key.key_id


ANONYMOUS = Caller()


def may_call(app_auth: str, keys_on: bool, caller: Caller) -> bool:
    """Whether ``caller`` may call an app of this ``app_auth``. Pure."""
    if app_auth == "public" or not keys_on:
        return True
    return caller.key is not None or caller.admin


def may_see(owner: str | None, caller: Caller, public: bool) -> bool:
    """Whether ``caller`` may read, stream or cancel a request recorded under ``owner`` (the key
    that submitted it, if any) of an app that is ``public`` or not. Pure.

    A request to a public app, or one submitted with no key, is its id's to see; any other is
    its key's and an admin's. A refusal is answered as if the request did not exist (404),
    never 403.
    """
    return public or owner is None or caller.admin or caller.owner == owner


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only. Pure."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def keys_required(host: str, any_keys: bool, public: bool) -> bool:
    """Whether calls to apps that are not public need a key. Pure.

    Yes once the server has any key; and on an address beyond loopback even before the first
    (calls to such apps get 401 until ``yurt keys create``), unless it was started ``--public``
    to serve everyone. On loopback with no keys (a laptop), no.
    """
    return any_keys or not (public or is_loopback(host))
