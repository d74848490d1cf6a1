"""The pub/sub subscription that pushes breaker transitions to this process.

On a single Redis or Sentinel the subscription uses a connection of the
store's client. redis-py 5.3's asyncio `RedisCluster` has no pub/sub; but
Redis Cluster broadcasts PUBLISH to every node, so the listener subscribes
with a plain connection to one cluster node, and moves to the next node when
that one fails. Pub/sub delivers at most once: after every (re)subscription
the registry re-reads all its breakers, and its poller bounds staleness when
a message is lost anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.client import PubSub

from .._redis import RedisClient, is_cluster
from ..exceptions import BackendUnavailable

logger = logging.getLogger("sessionstore.breaker")

_FIRST_RETRY = 0.05
#: How long one read waits for a message before checking the connection's health.
_READ_WAIT = 1.0


class TransitionListener:
    """Subscribes to the transition channel and hands each message to `on_message`.

    Args:
        client: the store's client (standalone, Sentinel or Cluster).
        channel: the channel name (`KeySpace.breaker_channel`).
        on_message: called with each message's payload (JSON text).
        on_subscribed: awaited after each (re)subscription, to catch up on
            anything missed while not subscribed.
        max_retry: the longest wait between reconnection attempts (seconds).

    The listener does not judge Redis's health (on a cluster, one node's
    subscription failing says nothing about a breaker's slot); the data
    round trips of the registry do.
    """

    def __init__(
        self,
        client: RedisClient,
        channel: str,
        *,
        on_message: Callable[[str], None],
        on_subscribed: Callable[[], Awaitable[None]],
        max_retry: float,
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._max_retry = max(max_retry, _FIRST_RETRY)
        self._node_index = 0
        #: True while subscribed (and caught up after subscribing).
        self.live = False
        #: ``host:port`` of the cluster node subscribed to (None on a single Redis).
        self.node: str | None = None

    async def _connect(self) -> tuple[PubSub, aioredis.Redis | None]:
        """A subscribed PubSub, and the node client to close with it (cluster only)."""
        if not is_cluster(self._client):
            pubsub = self._client.pubsub()  # type: ignore[union-attr]
            await pubsub.subscribe(self._channel)
            return pubsub, None
        cluster: Any = self._client
        await cluster.initialize()
        nodes = cluster.get_nodes()
        node = nodes[self._node_index % len(nodes)]
        self.node = f"{node.host}:{node.port}"
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=2, **node.connection_kwargs
        )
        node_client = aioredis.Redis.from_pool(pool)
        try:
            pubsub = node_client.pubsub()
            await pubsub.subscribe(self._channel)
        except BaseException:
            await node_client.aclose()
            raise
        return pubsub, node_client

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with a growing pause after failures."""
        retry = _FIRST_RETRY
        while True:
            pubsub: PubSub | None = None
            node_client: aioredis.Redis | None = None
            try:
                pubsub, node_client = await self._connect()
                retry = _FIRST_RETRY
                await self._on_subscribed()
                self.live = True
                await self._read_forever(pubsub)
            except (rex.RedisError, OSError, BackendUnavailable):
                self._node_index += 1
                logger.debug("breaker subscription lost; retrying in %.2f s", retry, exc_info=True)
            except Exception:
                # A bug, not an outage: say so loudly, but keep listening.
                logger.exception("breaker subscription failed; retrying in %.2f s", retry)
            finally:
                self.live = False
                await _close(pubsub, node_client)
            await asyncio.sleep(retry)
            retry = min(retry * 2, self._max_retry)

    async def _read_forever(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_READ_WAIT)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                self._on_message(data.decode() if isinstance(data, bytes) else str(data))


async def _close(pubsub: PubSub | None, node_client: aioredis.Redis | None) -> None:
    # Closing must not raise over the error that got us here, nor hang on a dead socket.
    try:
        if pubsub is not None:
            await pubsub.aclose()
        if node_client is not None:
            await node_client.aclose()
    except (rex.RedisError, OSError):
        logger.debug("error while closing the breaker subscription", exc_info=True)
