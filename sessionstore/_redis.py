"""Redis clients for the store: standalone, Sentinel or Cluster, and error wrapping.

All clients are built here from a `RedisSettings`, with short connect and
socket timeouts so that a dead Redis gives a fast `BackendUnavailable` rather
than a hang. No client is created at import time: callers own their clients
(a lifespan, a worker's ``on_startup``, a CLI command) and close them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SlaveNotFoundError

from .exceptions import BackendUnavailable
from .settings import RedisSettings

#: A client the store can talk to: standalone/Sentinel or Cluster.
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

#: Driver errors that mean "Redis is not available right now".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ClusterDownError,
    MasterNotFoundError,
    SlaveNotFoundError,
    rex.BusyLoadingError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    TimeoutError,
    ConnectionError,
)


class _SentinelMaster(aioredis.Redis):
    """A Sentinel-managed master client that also closes its Sentinel connections."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def create_client(settings: RedisSettings, *, decode_responses: bool = True) -> RedisClient:
    """A new async client for `settings`; the caller closes it with ``aclose()``.

    .. versionadded:: 0.1
    """
    common: dict[str, Any] = {
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_connect_timeout": settings.connect_timeout.total_seconds(),
        "socket_timeout": settings.socket_timeout.total_seconds(),
        "decode_responses": decode_responses,
        "health_check_interval": 30,
    }
    if settings.mode == "cluster":
        cluster: RedisCluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.hosts],
            max_connections=settings.max_connections,
            # A bounded number of slot-map refreshes, then a clear error.
            cluster_error_retry_attempts=2,
            ssl=settings.tls,
            **common,
        )
        return cluster
    if settings.mode == "sentinel":
        sentinel = Sentinel(
            list(settings.hosts),
            socket_timeout=settings.socket_timeout.total_seconds(),
            socket_connect_timeout=settings.connect_timeout.total_seconds(),
        )
        if settings.tls:
            common["ssl"] = True
        master: _SentinelMaster = sentinel.master_for(
            settings.sentinel_master, redis_class=_SentinelMaster, db=settings.database, **common
        )
        master.sentinel_manager = sentinel
        return master
    if settings.unix_socket_path:
        return aioredis.Redis(
            unix_socket_path=settings.unix_socket_path,
            db=settings.database,
            max_connections=settings.max_connections,
            **common,
        )
    host, port = settings.hosts[0]
    pool = aioredis.BlockingConnectionPool(
        host=host,
        port=port,
        db=settings.database,
        max_connections=settings.max_connections,
        # Waiting for a free pooled connection is bounded like a command.
        timeout=settings.socket_timeout.total_seconds(),  # type: ignore[arg-type]
        connection_class=aioredis.SSLConnection if settings.tls else aioredis.Connection,
        **common,
    )
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    return aioredis.Redis.from_pool(pool)


def is_cluster(client: RedisClient) -> bool:
    """True for a Redis Cluster client."""
    return isinstance(client, RedisCluster)


@contextmanager
def backend_errors(action: str) -> Iterator[None]:
    """Turn driver errors meaning "Redis is unavailable" into `BackendUnavailable`.

    Out-of-memory refusals (``maxmemory`` with ``noeviction``) are reported the
    same way: the store cannot take writes until an operator acts.
    """
    try:
        yield
    except _UNAVAILABLE as exc:
        raise BackendUnavailable(f"Redis unavailable during {action}: {exc}") from exc
    except rex.ResponseError as exc:
        if str(exc).startswith(("OOM", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN")):
            raise BackendUnavailable(f"Redis refused {action}: {exc}") from exc
        raise
