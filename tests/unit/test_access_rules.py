"""The access model's decisions, exhaustively over app_auth, keys on/off and who calls."""

from __future__ import annotations

import pytest

from yurt.access import (
    ANONYMOUS,
    Caller,
    is_loopback,
    keys_required,
    may_call,
    may_see,
)
from yurt.keys import KeyInfo

A = Caller(KeyInfo("a", None, "API", 0.0))
B = Caller(KeyInfo("b", None, "API", 0.0))
ADMIN = Caller(admin=True)


@pytest.mark.parametrize("auth", ["private", "shared"])
def test_a_private_app_needs_a_key_once_keys_exist(auth: str) -> None:
    """private and shared: anonymous refused with keys on, open with none; keys and admins pass."""
    assert not may_call(auth, True, ANONYMOUS)
    assert may_call(auth, True, A) and may_call(auth, True, ADMIN)
    assert may_call(auth, False, ANONYMOUS)


def test_a_public_app_needs_nothing() -> None:
    """public: anyone, keys on or off, and its requests are their id's to see."""
    assert may_call("public", True, ANONYMOUS)
    assert may_see(A.owner, B, public=True) and may_see(A.owner, ANONYMOUS, public=True)


def test_requests_belong_to_their_key_and_others_see_nothing() -> None:
    """A private app's request of key A is A's: B may not see it, A and admins may; one made
    with no key is its id's."""
    owner = A.owner
    assert owner == "a"
    assert may_see(owner, A, public=False) and may_see(owner, ADMIN, public=False)
    assert not may_see(owner, B, public=False) and not may_see(owner, ANONYMOUS, public=False)
    assert may_see(None, B, public=False) and may_see(None, ANONYMOUS, public=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.internal", False),
    ],
)
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    """Addresses of this machine only are loopback; every-address binds and names are not."""
    assert is_loopback(host) is loopback


def test_beyond_loopback_keys_are_required_from_the_start_unless_public() -> None:
    """Off loopback, keys are wanted even before the first exists; --public lifts that."""
    assert keys_required("0.0.0.0", any_keys=False, public=False)
    assert not keys_required("0.0.0.0", any_keys=False, public=True)
    assert not keys_required("127.0.0.1", any_keys=False, public=False)
    assert keys_required("127.0.0.1", any_keys=True, public=False)
    assert keys_required("10.1.2.3", any_keys=True, public=True)
