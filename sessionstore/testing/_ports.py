"""TCP ports on 127.0.0.1 for the local servers: a free one, or whether one is taken."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Drawn from 20000-45000 (not the kernel's ephemeral range), because a
    cluster node also listens on its port + 10000, which must stay below 65536.
    """
    for _ in range(100):
        port = random.randint(20000, 45000)
        with socket.socket() as sock, socket.socket() as bus:
            try:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
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
