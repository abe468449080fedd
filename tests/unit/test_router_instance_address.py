"""Where the router's own Consul registration and check point (`instance_address`)."""

from __future__ import annotations

import pytest

from yurt.platform import instance_address

LB = "https://yurt.example.com"


@pytest.mark.parametrize(
    ("host", "tls", "expected"),
    [
        ("10.0.0.5", False, ("10.0.0.5", 8080, "http://10.0.0.5:8080")),
        ("10.0.0.5", True, ("10.0.0.5", 8080, "https://10.0.0.5:8080")),
        ("fd00::5", False, ("fd00::5", 8080, "http://[fd00::5]:8080")),
        ("node-3.internal", False, ("node-3.internal", 8080, "http://node-3.internal:8080")),
        ("127.0.0.1", False, ("127.0.0.1", 8080, "http://127.0.0.1:8080")),
    ],
)
def test_one_listening_address_is_the_instance(
    host: str, tls: bool, expected: tuple[str, int, str]
) -> None:
    """A router listening on one address is registered and checked there, not at the public URL."""
    assert instance_address(host, 8080, tls, LB) == expected


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_every_address_falls_back_to_the_public_url(host: str) -> None:
    """A router listening on every address names none of them: the public URL stands in."""
    assert instance_address(host, 8080, False, LB) == ("yurt.example.com", 443, LB)
    assert instance_address(host, 8080, False, "http://10.0.0.5:9000/") == (
        "10.0.0.5",
        9000,
        "http://10.0.0.5:9000",
    )
