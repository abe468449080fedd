"""Ports a test or a double names before its server binds them.

A port picked by binding port 0 and closing the socket is in the kernel's ephemeral range,
where any server binding port 0 meanwhile (another test's, on a loaded machine running tests in
parallel) may be given it: the server meant for it then fails with "address already in use".
Nomad gives dynamic ports at random from 20000-32000 (DefaultMinDynamicPort and
DefaultMaxDynamicPort, nomad/structs/network.go:15-22 at hashicorp/nomad 00fdf67c), below Linux's
ephemeral range (32768-60999 by default), and so do these.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Container
from pathlib import Path

MIN_DYNAMIC_PORT, MAX_DYNAMIC_PORT = 20000, 32000


def ephemeral_range() -> range:
    """The kernel's range of ports for port-0 binds and outgoing connections (Linux's default
    if unread)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def unused_port(taken: Container[int] = ()) -> int:
    """A port at random in Nomad's dynamic range, not in ``taken``, outside the kernel's
    ephemeral range, and free to bind now (with ``SO_REUSEADDR``, as servers bind)."""
    ephemeral = ephemeral_range()
    for _ in range(1000):
        port = random.randint(MIN_DYNAMIC_PORT, MAX_DYNAMIC_PORT)
        if port in taken or port in ephemeral:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {MIN_DYNAMIC_PORT}-{MAX_DYNAMIC_PORT}")
