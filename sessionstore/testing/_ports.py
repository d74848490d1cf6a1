"""TCP ports on 127.0.0.1 for the local servers: a free one, or whether one is taken."""

from __future__ import annotations

import random
import socket
from functools import cache
from pathlib import Path

#: A cluster node also listens on its port + this (the cluster bus).
_BUS_OFFSET = 10000
#: Linux's default ephemeral range, where /proc does not say.
_DEFAULT_EPHEMERAL = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux's /proc)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


@cache
def _candidates() -> list[int]:
    """Ports from 10000-45000 that lie, with their bus port, outside the ephemeral range."""
    low, high = _ephemeral_range()
    ports = [
        port
        for port in range(10000, 45001)
        if not (low <= port <= high or low <= port + _BUS_OFFSET <= high)
    ]
    return ports or list(range(20000, 45001))  # an ephemeral range that leaves no room


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Drawn outside the kernel's ephemeral range (with the port + 10000 a cluster
    node also listens on): there any outgoing connection on the machine may take
    the port as its local one between this call and the server's bind, and hold
    it for a minute in TIME_WAIT, which even ``SO_REUSEADDR`` does not bind over.
    """
    candidates = _candidates()
    for _ in range(100):
        port = random.choice(candidates)
        with socket.socket() as sock, socket.socket() as bus:
            try:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another socket holds `host`:`port` (a server's bind there would fail).

    Binds with SO_REUSEADDR as servers do, so connections an earlier server left in
    TIME_WAIT do not count.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
