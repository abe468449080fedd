"""Tests for where webhooks may go (pure address classification, no connection is made) and
for the redaction of webhook URLs in logs."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from yurt.config import build_server_config
from yurt.errors import ConfigError
from yurt.queue.destinations import (
    CheckedResolver,
    DestinationPolicy,
    DestinationRefused,
    IPAddress,
    classify,
    is_local_address,
    redact_url,
)

TABLE = [
    # public: allowed
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("11.0.0.1", None),
    ("100.63.255.255", None),
    ("100.128.0.0", None),
    ("172.15.255.255", None),
    ("172.32.0.0", None),
    ("192.169.0.1", None),
    ("223.255.255.255", None),
    ("2606:4700:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),
    ("2002:808:808::1", None),
    # loopback, in every spelling that reaches it
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:2", "loopback"),
    ("64:ff9b::7f00:1", "loopback"),
    ("2002:7f00:1::", "loopback"),
    # unspecified
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:0.0.0.0", "unspecified"),
    # link-local, where cloud metadata services answer
    ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"),
    ("fe80::1%2", "link_local"),
    ("::ffff:169.254.169.254", "link_local"),
    ("febf::1", "link_local"),
    # private, and IPv6 unique local
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:192.168.0.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fec0::1", "private"),
    ("64:ff9b:1::a00:1", "private"),
    # shared address space (carrier-grade NAT)
    ("100.64.0.1", "shared"),
    ("100.127.255.255", "shared"),
    # multicast
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("::ffff:224.0.0.251", "multicast"),
    # reserved, documentation and the rest
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.51.100.7", "reserved"),
    ("203.0.113.9", "reserved"),
    ("198.18.0.1", "reserved"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::1.2.3.4", "reserved"),
    ("100::1", "reserved"),
    ("2001::1", "reserved"),
    ("2001:db8::1", "reserved"),
    ("3fff::1", "reserved"),
]


@pytest.mark.parametrize(("address", "rule"), TABLE)
def test_classify(address: str, rule: str | None) -> None:
    """Each address is allowed (None) or refused by the named rule."""
    assert classify(ipaddress.ip_address(address)) == rule


def never_local(address: IPAddress) -> bool:
    return False


@pytest.mark.parametrize(("address", "rule"), TABLE)
def test_the_policy_refuses_by_the_table_unless_allowed(address: str, rule: str | None) -> None:
    """A policy refuses what the table refuses, naming the rule; a CIDR covering it allows it."""
    ip = ipaddress.ip_address(address)
    refusal = DestinationPolicy(is_local=never_local).check_address("h", ip)
    assert (refusal.rule if refusal else None) == rule
    if refusal is not None:
        assert refusal.address == str(ip) and f"rule {rule}" in refusal.message()
    wide = DestinationPolicy(["0.0.0.0/0", "::/0"], is_local=never_local)
    assert wide.check_address("h", ip) is None


def test_the_hosts_own_addresses_are_refused_unless_allowed() -> None:
    """A public address of this host is refused as own_address; listing it allows it."""
    mine = ipaddress.ip_address("8.8.4.4")  # stands for a public address of this host

    def is_local(address: IPAddress) -> bool:
        return address == mine

    refusal = DestinationPolicy(is_local=is_local).check_address("h", mine)
    assert refusal is not None and refusal.rule == "own_address"
    assert "an address of this host" in refusal.message()
    assert DestinationPolicy(["8.8.4.4"], is_local=is_local).check_address("h", mine) is None
    assert (
        DestinationPolicy(is_local=is_local).check_address("h", ipaddress.ip_address("8.8.8.8"))
        is None
    )


def test_is_local_address_binds_without_sending() -> None:
    """Loopback is this host's; a documentation address never is."""
    assert is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert not is_local_address(ipaddress.ip_address("192.0.2.1"))
    assert not is_local_address(ipaddress.ip_address("8.8.8.8"))


def test_allowed_names_match_exactly_or_under_a_wildcard() -> None:
    """Names match case-insensitively, without a trailing dot; *. matches any subdomain."""
    policy = DestinationPolicy(["hooks.internal", "*.svc.cluster.local"])
    assert policy.allows_name("hooks.internal") and policy.allows_name("HOOKS.Internal.")
    assert not policy.allows_name("x.hooks.internal")
    assert policy.allows_name("a.svc.cluster.local") and policy.allows_name("a.b.svc.cluster.local")
    assert not policy.allows_name("svc.cluster.local")
    assert not policy.allows_name("evil-svc.cluster.local")


def test_check_literal_reads_the_urls_address() -> None:
    """An address in a URL (bracketed IPv6 too) is checked; a name is left to the resolver."""
    policy = DestinationPolicy(is_local=never_local)
    refusal = policy.check_literal("http://[::ffff:127.0.0.1]:8080/x")
    assert refusal is not None and refusal.rule == "loopback"
    refusal = policy.check_literal("https://u:p@169.254.169.254/latest/meta-data")
    assert refusal is not None and refusal.rule == "link_local"
    assert policy.check_literal("https://8.8.8.8/hook") is None
    assert policy.check_literal("https://localhost/hook") is None


@pytest.mark.parametrize(
    "host", ["127.1", "0x7f.0.0.1", "017700000001", "2130706433", "0x7f000001"]
)
def test_check_literal_knows_the_old_ipv4_spellings(host: str) -> None:
    """127.0.0.1 written as inet_aton reads it is an address, checked as such, not a name."""
    refusal = DestinationPolicy(is_local=never_local).check_literal(f"http://{host}:8080/hook")
    assert refusal is not None and refusal.rule == "loopback"


async def test_check_url_resolves_a_name_once_and_checks_its_addresses() -> None:
    """localhost (from the hosts file) is refused as loopback unless listed by name."""
    refusal = await DestinationPolicy().check_url("http://localhost:1/hook")
    assert refusal is not None and refusal.rule == "loopback" and refusal.host == "localhost"
    assert await DestinationPolicy(["localhost"]).check_url("http://localhost:1/hook") is None
    for legacy in ["http://2130706433/", "http://127.1/", "http://0x7f.1/"]:  # inet_aton forms
        refusal = await DestinationPolicy().check_url(legacy)
        assert refusal is not None and refusal.rule == "loopback", legacy
    assert await DestinationPolicy(["127.0.0.0/8", "::1"]).check_url("http://localhost:1/") is None


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses; connects nowhere."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_refuses_a_name_if_any_address_is_refused() -> None:
    """A name resolving to a public and a private address is refused, naming the private one."""
    resolver = CheckedResolver(
        DestinationPolicy(is_local=never_local), FixedResolver("8.8.8.8", "10.0.0.7")
    )
    with pytest.raises(DestinationRefused) as caught:
        await resolver.resolve("rebind.example", 443)
    assert (caught.value.refusal.rule, caught.value.refusal.address) == ("private", "10.0.0.7")


async def test_the_resolver_returns_the_checked_addresses_with_the_urls_host() -> None:
    """Allowed addresses come back as resolved, still naming the URL's host (Host, TLS)."""
    resolver = CheckedResolver(DestinationPolicy(is_local=never_local), FixedResolver("8.8.8.8"))
    [found] = await resolver.resolve("hooks.example", 443)
    assert (found["hostname"], found["host"], found["port"]) == ("hooks.example", "8.8.8.8", 443)
    listed = CheckedResolver(DestinationPolicy(["hooks.example"]), FixedResolver("10.0.0.7"))
    assert [r["host"] for r in await listed.resolve("hooks.example", 443)] == ["10.0.0.7"]


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://hooks.example/x?job=1", "https://hooks.example/x?job=1"),
        ("https://alice:pw@hooks.example:8443/x", "https://***@hooks.example:8443/x"),
        ("https://tok@hooks.example/x", "https://***@hooks.example/x"),
        (
            "https://h/x?access_token=a&api_key=b&X-Amz-Signature=c&sig=d&secret=e&id=7",
            "https://h/x?access_token=***&api_key=***&X-Amz-Signature=***&sig=***&secret=***&id=7",
        ),
        ("https://h/x?password=p#frag", "https://h/x?password=***"),
        ("http://[::1", "***"),
    ],
)
def test_redact_url(url: str, logged: str) -> None:
    """User info and credential-like query values are replaced; the rest stays readable."""
    assert redact_url(url) == logged


def test_webhook_allow_entries_are_validated() -> None:
    """webhook_allow takes CIDRs, addresses and host names; anything else names the entry."""
    good = {
        "queue": {"webhook_allow": ["10.0.0.0/8", "127.0.0.1", "::1", "hooks.internal", "*.svc"]}
    }
    assert build_server_config(good, {}, {}).queue.webhook_allow[3] == "hooks.internal"
    with pytest.raises(ConfigError, match=r"queue\.webhook_allow.*http://x"):
        build_server_config({"queue": {"webhook_allow": ["http://x"]}}, {}, {})
