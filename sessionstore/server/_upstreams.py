"""A replica's upstream side: its `UpstreamPool` and the queue its reconnect jobs go to.

Built by the lifespan after the breaker registry (the pool reports to it) and
closed before it: the pool first (its background tasks and sockets), then the
queue's client. Nothing here does I/O at start-up, so a replica starts while
Redis (the store's or the queue's) is down, as the rest of the lifespan does:
the pool's upkeep waits and retries, and a reconnect job that cannot be queued
is logged and asked for again by the next failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.asyncio import Redis

from .._environment import Settings
from .._redis import RedisClient, backend_errors, create_client
from ..breaker import BreakerRegistry
from ..exceptions import InvalidInput
from ..store import SessionStore
from ..upstream import (
    ArqReconnects,
    BreakerGates,
    UpstreamPool,
    connectors_for,
    credentials_for,
)

logger = logging.getLogger("sessionstore.server")


@dataclass
class ReconnectQueue:
    """The arq queue of the worker fleet, as this replica reaches it.

    .. versionadded:: 0.1
    """

    #: Owns the connections (our timeouts: a dead queue fails fast, never hangs).
    client: RedisClient
    #: arq's client over the same connections, for ``enqueue_job``.
    arq: ArqRedis
    #: Queues the reconnect jobs (one per connection fleet-wide).
    reconnects: ArqReconnects

    @property
    def name(self) -> str:
        """The arq queue's key (the workers listen on it)."""
        return self.reconnects.queue_name

    async def ping(self) -> float:
        """One PING of the queue's Redis; its round trip in seconds.

        Raises:
            BackendUnavailable: the queue's Redis did not answer.
        """
        started = time.perf_counter()
        with backend_errors("queue ping"):
            await self.arq.ping()
        return time.perf_counter() - started

    async def aclose(self) -> None:
        """Close the connections (the arq view first: it does not own them)."""
        await self.arq.aclose()
        await self.client.aclose()


@dataclass
class ServerUpstreams:
    """The replica's pool, and how reconnect jobs are queued (or why they are not).

    .. versionadded:: 0.1
    """

    pool: UpstreamPool
    queue: ReconnectQueue | None
    #: Why reconnect jobs are off (None when they are on).
    queue_off: str | None = None


def reconnect_queue(settings: Settings) -> ReconnectQueue:
    """A client of the job queue's Redis (``SESSIONSTORE_QUEUE_REDIS_URL``, else the
    store's when that is not a cluster). No I/O: arq's own ``create_pool`` pings
    and retries for seconds at start-up, which this avoids.

    Raises:
        InvalidInput: no store URL, or the queue would be on a Redis Cluster.
    """
    if settings.redis_url is None:
        raise InvalidInput("set SESSIONSTORE_REDIS_URL: the server needs a Redis")
    queue_settings = settings.queue_redis(settings.redis_url)
    if queue_settings.mode == "cluster":
        raise InvalidInput(
            "the job queue cannot be on Redis Cluster (arq does not support it): "
            "set SESSIONSTORE_QUEUE_REDIS_URL to a standalone or Sentinel Redis"
        )
    # arq pickles jobs: bytes replies, as arq's own client has them.
    client = create_client(queue_settings, decode_responses=False)
    assert isinstance(client, Redis)  # not a cluster: refused above
    arq = ArqRedis(client.connection_pool)
    return ReconnectQueue(client, arq, ArqReconnects.from_settings(arq, settings))


@asynccontextmanager
async def open_upstreams(
    settings: Settings,
    store: SessionStore,
    breakers: BreakerRegistry,
    environ: Mapping[str, str],
) -> AsyncIterator[ServerUpstreams]:
    """The replica's `UpstreamPool`, open, with the fleet's breakers and reconnect jobs.

    The pool follows the session events, so the sockets of a session that
    expires, is deleted or rotated are closed at once (its periodic upkeep
    catches what the events miss). Without a queue (a cluster store and no
    queue URL), reconnect jobs are off and the pool takes half-open probes
    itself, or an opened breaker would never be probed.

    Raises:
        InvalidInput: a secret key that is not a Fernet key, an unknown profile.
    """
    upstream = settings.upstream
    credentials = credentials_for(settings, environ)
    queue: ReconnectQueue | None = None
    why: str | None = None
    try:
        queue = reconnect_queue(settings)
    except InvalidInput as exc:
        why = str(exc)
        logger.warning("reconnect jobs are off: %s", why)
    try:
        pool = UpstreamPool(
            store,
            connectors=connectors_for(upstream),
            credentials=credentials,
            settings=upstream,
            gates=BreakerGates(breakers),
            reconnects=queue.reconnects if queue else None,
            follow_events=True,
            probes_in_process=queue is None,
        )
        async with pool:
            yield ServerUpstreams(pool, queue, why)
    finally:
        if queue is not None:
            await queue.aclose()
