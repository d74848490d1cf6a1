"""`RedisSubscriptionBus`: the SDK's `SubscriptionBus` (2026-07-28) across replicas.

On 2026-07-28 a client hears about changes by holding a ``subscriptions/listen``
stream, and the server's tools publish typed events (``ctx.notify_tools_changed()``
...) to the server's bus. The SDK's default bus is in process memory, so a
client listening on replica B never hears of a change published on replica A.
This bus appends every event to one capped Redis stream of the fleet
(``KeySpace.mcp_subscriptions``) and each replica tails that stream and hands
the events to its local listeners (its own publishes included, so every
listener hears each event once). Delivery is fire-and-forget, as the SDK's:
a replica that was away misses what happened meanwhile; clients re-listen and
refetch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from mcp.server.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from redis.typing import EncodableT, FieldT

from .. import SessionStore
from .._redis import RedisClient, backend_errors
from ..exceptions import SessionStoreError

logger = logging.getLogger("sessionstore.mcp")

_KINDS: dict[str, type[ToolsListChanged | PromptsListChanged | ResourcesListChanged]] = {
    "tools": ToolsListChanged,
    "prompts": PromptsListChanged,
    "resources": ResourcesListChanged,
}
_BLOCK_MS = 1000


def _encode(event: ServerEvent) -> dict[FieldT, EncodableT]:
    if isinstance(event, ResourceUpdated):
        return {"kind": "resource", "uri": event.uri}
    for kind, model in _KINDS.items():
        if isinstance(event, model):
            return {"kind": kind}
    raise TypeError(f"not a server event: {event!r}")


def _decode(fields: dict[str, str]) -> ServerEvent | None:
    kind = fields.get("kind")
    if kind == "resource" and fields.get("uri"):
        return ResourceUpdated(uri=fields["uri"])
    model = _KINDS.get(kind or "")
    return model() if model is not None else None


class RedisSubscriptionBus:
    """A `SubscriptionBus` shared by every replica through one Redis stream.

    Pass the same instance to ``MCPServer(subscriptions=...)`` and to
    ``mcp_app(..., subscriptions=...)``; the app's lifespan runs it.

    Args:
        maxlen: the fleet's stream is capped near this many events.

    .. versionadded:: 0.1
    """

    def __init__(self, *, maxlen: int = 1000) -> None:
        self._maxlen = maxlen
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._redis: RedisClient | None = None
        self._key = ""

    @contextlib.asynccontextmanager
    async def run(self, store: SessionStore) -> AsyncIterator[None]:
        """Publish to and follow the fleet's stream (on `store`'s Redis) until the block ends."""
        if self._redis is not None:
            raise RuntimeError("RedisSubscriptionBus.run() is already running")
        self._redis, self._key = store.redis, store.keys.mcp_subscriptions()
        try:
            async with anyio.create_task_group() as group:
                ready = anyio.Event()
                group.start_soon(self._follow, ready)
                await ready.wait()
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            self._redis = None

    async def publish(self, event: ServerEvent) -> None:
        """Send `event` to the listeners of every replica (one round trip).

        Raises:
            BackendUnavailable: Redis did not answer.
            RuntimeError: the bus is not running.
        """
        if self._redis is None:
            raise RuntimeError("RedisSubscriptionBus is not running (mcp_app runs it)")
        with backend_errors("publishing an MCP event"):
            await self._redis.xadd(self._key, _encode(event), maxlen=self._maxlen, approximate=True)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register a local `listener`; returns an idempotent unsubscribe."""
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    async def _follow(self, ready: anyio.Event) -> None:
        assert self._redis is not None
        cursor = "$"
        while True:
            try:
                if cursor == "$":
                    with backend_errors("reading MCP events"):
                        last = await self._redis.xrevrange(self._key, count=1)
                    cursor = last[0][0] if last else "0-0"
                ready.set()
                with backend_errors("reading MCP events"):
                    reply = await self._redis.xread({self._key: cursor}, block=_BLOCK_MS)
            except SessionStoreError:
                ready.set()
                logger.warning("subscription events unreadable; retrying", exc_info=True)
                await anyio.sleep(1.0)
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    event = _decode(fields)
                    if event is not None:
                        self._deliver(event)

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except (
                Exception
            ):  # fan-out boundary, as the SDK's bus: one listener never starves others
                logger.exception("subscription listener raised; continuing")
