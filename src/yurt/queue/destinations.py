"""Where completion webhooks may go, and what may be said of a webhook URL in a log.

A webhook URL comes from whoever submits a request, and the router POSTs to it from inside the
network it runs in. So a destination whose address is loopback, link-local (cloud metadata
services live there), private, shared (CGNAT), multicast, unspecified or otherwise reserved, or
an address of this host, is refused unless ``[queue] webhook_allow`` lists it (a CIDR, or a
host name). The check is made on the addresses actually connected to: a host name is resolved
once, every address it resolves to is classified, and the connection goes only to those
checked addresses (:class:`CheckedResolver`), so a name that resolves elsewhere a moment later
(DNS rebinding) gains nothing. It is made at submission (a 422 naming the rule) and again at
each delivery (a refused delivery is given up, not retried).

:func:`classify` is the pure table; :class:`DestinationPolicy` adds the allow list and the
host's own addresses.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The rules, in the words a refusal uses.
RULES = {
    "unspecified": "an unspecified address",
    "loopback": "a loopback address",
    "link_local": "a link-local address",
    "private": "a private address",
    "shared": "a shared (carrier-grade NAT) address",
    "multicast": "a multicast address",
    "reserved": "a reserved or documentation address",
    "own_address": "an address of this host",
    "unresolvable": "a name that does not resolve",
}

_V4_TABLE = [
    (ipaddress.IPv4Network(net), rule)
    for net, rule in [
        ("0.0.0.0/8", "unspecified"),  # "this network" (RFC 791)
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link_local"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared"),  # RFC 6598
        ("224.0.0.0/4", "multicast"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "reserved"),  # TEST-NET-1
        ("198.51.100.0/24", "reserved"),  # TEST-NET-2
        ("203.0.113.0/24", "reserved"),  # TEST-NET-3
        ("198.18.0.0/15", "reserved"),  # benchmarking
        ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast
        ("240.0.0.0/4", "reserved"),  # future use, and the broadcast address
    ]
]
_V6_TABLE = [
    (ipaddress.IPv6Network(net), rule)
    for net, rule in [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link_local"),
        ("fc00::/7", "private"),  # unique local
        ("fec0::/10", "private"),  # site-local, deprecated
        ("64:ff9b:1::/48", "private"),  # local-use NAT64
        ("ff00::/8", "multicast"),
        ("::/8", "reserved"),  # v4-compatible and other IETF-reserved forms
        ("100::/64", "reserved"),  # discard
        ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo, ORCHID, ...)
        ("2001:db8::/32", "reserved"),  # documentation
        ("3fff::/20", "reserved"),  # documentation
    ]
]
# IPv6 forms that carry an IPv4 address and reach it: judged as that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Query parameters whose value is a credential, by a part of their name.
_SECRET_PARAM = re.compile(r"token|key|secret|sig|pass|auth|cred|session|hmac|code", re.I)
REDACTED = "***"


def classify(address: IPAddress) -> str | None:
    """The rule that refuses ``address`` as a webhook destination; None for a public one. Pure."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return classify(embedded)
        return next((rule for network, rule in _V6_TABLE if address in network), None)
    return next((rule for network, rule in _V4_TABLE if address in network), None)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a v4-mapped, NAT64 or 6to4 address stands for."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (an IPv6 one with or without brackets), else None.

    The old IPv4 spellings that ``inet_aton`` takes count too (``127.1``, ``0x7f.0.0.1``,
    ``017700000001``, ``2130706433``): some HTTP clients connect to them as addresses, and no
    DNS name is all numbers.
    """
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    if _LEGACY_V4.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


# One to four numbers, each decimal, octal (a leading 0) or hex (0x...), separated by dots.
_LEGACY_V4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.I)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a destination is refused: the ``rule``, the URL's ``host`` and the ``address``."""

    rule: str
    host: str
    address: str

    def message(self) -> str:
        """A sentence naming the host, the address, the rule and the fix."""
        where = self.host if self.address in ("", self.host) else f"{self.host} ({self.address})"
        return (
            f"webhook destination {where} is {RULES[self.rule]} (rule {self.rule}): refused "
            "unless [queue] webhook_allow lists it"
        )


class DestinationRefused(Exception):
    """A webhook's destination is refused. Not an ``OSError``, so aiohttp passes it through."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


class DestinationPolicy:
    """Which webhook destinations are allowed: public addresses, and what ``allow`` lists.

    ``is_local`` says whether an address is one of this host's (a test may replace it).
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        is_local: Callable[[IPAddress], bool] | None = None,
    ) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        names: set[str] = set()
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        self._networks = tuple(networks)
        self._names = frozenset(names)
        self._is_local = is_local_address if is_local is None else is_local

    def allows_name(self, host: str) -> bool:
        """Whether the allow list names ``host`` (exactly, or under a ``*.`` entry)."""
        host = host.lower().rstrip(".")
        if host in self._names:
            return True
        labels = host.split(".")
        return any("*." + ".".join(labels[i:]) in self._names for i in range(1, len(labels)))

    def check_address(self, host: str, address: IPAddress) -> Refusal | None:
        """The refusal of connecting to ``address`` for ``host``; None when it is allowed."""
        if any(address in network for network in self._networks):
            return None
        rule = classify(address)
        if rule is None and self._is_local(address):
            rule = "own_address"
        return None if rule is None else Refusal(rule, host, str(address))

    def check_literal(self, url: str) -> Refusal | None:
        """The refusal of ``url`` when its host is an address; None when allowed or a name.

        aiohttp connects to an address in a URL without asking a resolver: this is its check.
        """
        host = urlsplit(url).hostname or ""
        address = parse_address(host)
        if address is None or self.allows_name(host):
            return None
        return self.check_address(host, address)

    async def check_url(self, url: str, *, timeout: float = 5.0) -> Refusal | None:
        """The refusal of ``url``'s destination, resolving its host once; None if allowed.

        A name that does not exist is refused; a lookup that fails otherwise (a DNS server
        down, a timeout) is not, since each delivery checks again.
        """
        host = urlsplit(url).hostname or ""
        if not host:
            return Refusal("unresolvable", host, "")
        if self.allows_name(host):
            return None
        if parse_address(host) is not None:
            return self.check_literal(url)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            missing = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
            return Refusal("unresolvable", host, "") if exc.errno in missing else None
        except (OSError, TimeoutError, UnicodeError):
            return None
        for *_, sockaddr in infos:
            address = parse_address(str(sockaddr[0]))
            if address is None:
                continue
            refusal = self.check_address(host, address)
            if refusal is not None:
                return refusal
        return None


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that hands the connector only addresses ``policy`` allows.

    Resolves once, checks every address, and raises :class:`DestinationRefused` if any is
    refused; aiohttp then connects to the checked addresses, keeping the URL's host for the
    ``Host`` header and the TLS server name.
    """

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Every address of ``host``, once all are allowed."""
        found = await self._inner.resolve(host, port, family)
        if self.policy.allows_name(host):
            return found
        for result in found:
            address = parse_address(result["host"])
            if address is None:
                raise DestinationRefused(Refusal("unresolvable", host, result["host"]))
            refusal = self.policy.check_address(host, address)
            if refusal is not None:
                raise DestinationRefused(refusal)
        return found

    async def close(self) -> None:
        """Close the resolver it wraps."""
        await self._inner.close()


def is_local_address(address: IPAddress) -> bool:
    """Whether ``address`` belongs to this host: a socket can be bound to it.

    Binding sends nothing. Where any address can be bound (``ip_nonlocal_bind``), this cannot
    tell, and says no: the other rules still hold.
    """
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return _bind_tells(family) and _binds(family, str(address))


@functools.cache
def _bind_tells(family: socket.AddressFamily) -> bool:
    # A documentation address is never this host's: if it binds, every address does.
    return not _binds(family, "192.0.2.1" if family == socket.AF_INET else "2001:db8::1")


def _binds(family: socket.AddressFamily, address: str) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


def redact_url(url: str) -> str:
    """``url`` fit for a log: no user info, and credential-like query values replaced."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return REDACTED  # not even parseable: say nothing of it
    if any(_SECRET_PARAM.search(name) for name, _ in pairs):
        redacted = [(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs]
        query = urlencode(redacted, safe="*", quote_via=quote)
    else:
        query = parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
