"""Typed settings, each declared once.

Frozen per-concept models that library code takes as arguments:

- `RedisSettings` (``_redis.py``): where a Redis is, from a URL (`RedisSettings.from_dsn`).
- `SessionSettings` (``_session.py``): lifetimes, limits, the key space.
- `BreakerSettings` (``_breaker.py``): the fleet-shared circuit breakers.
- `WorkerConfig` (``_worker.py``): sweeps, repair, heartbeats of the worker fleet.
- `ServerSettings` (``_server.py``): the reference server and middleware.
- `Duration`, `EmptyIsNone` (``_types.py``): the shared value types.

`UpstreamSettings` lives with the upstream part (``upstream/_settings.py``) and
`Settings`, the reader of ``SESSIONSTORE_*`` that composes them all, in
``sessionstore/_environment.py``: the store core imports this package and must
import nothing of the upstream part. Library code never reads ``os.environ``;
only `Settings` does.
"""

from __future__ import annotations

from ._breaker import BreakerRedisDownPolicy, BreakerSettings
from ._redis import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, RedisMode, RedisSettings
from ._server import ServerSettings
from ._session import SessionSettings
from ._types import Duration, EmptyIsNone
from ._worker import WorkerConfig, cron_interval_error

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "BreakerRedisDownPolicy",
    "BreakerSettings",
    "Duration",
    "EmptyIsNone",
    "RedisMode",
    "RedisSettings",
    "ServerSettings",
    "SessionSettings",
    "WorkerConfig",
    "cron_interval_error",
]
