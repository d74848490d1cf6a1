"""The MCP server the MCP benchmark serves: one tool that touches no state, one that
increments a session attribute. ``plain_app`` is the SDK's own Streamable HTTP app
(sessions in process memory; with ``resumable``, events in a minimal in-memory
`EventStore`, as the SDK's examples keep them); ``roaming_app`` is the same server
through `mcp_app` (built when SESSIONSTORE_REDIS_URL is set, as on a replica started
by the benchmark)."""

from __future__ import annotations

import itertools
import os
from collections import deque

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage
from starlette.applications import Starlette

from sessionstore import Settings
from sessionstore.mcp import mcp_app, mcp_session


def make_server() -> MCPServer:
    """The benchmark's server: ``echo`` (no state) and ``bump`` (one increment)."""
    server = MCPServer("bench", log_level="WARNING")

    @server.tool()
    async def echo(text: str) -> str:
        """Return `text`."""
        return text

    @server.tool()
    async def bump() -> int:
        """Increment the session's counter."""
        return await mcp_session().incr("n")

    return server


class MemoryEventStore(EventStore):
    """The SDK's resumability with events in this process: the last `limit` events, each
    replayable after its id within its own stream (the SDK ships no event store, its
    examples keep one like this)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._events: deque[tuple[EventId, StreamId, JSONRPCMessage | None]] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep the event; its id is a counter."""
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the events after `last_event_id` of its stream, in order."""
        stream = next((s for e, s, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, stream_id, message in list(self._events):
            if after and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


def plain_app(*, resumable: bool = False) -> Starlette:
    """The SDK's own app: sessions (and, if `resumable`, events) in this process only."""
    # A host outside the loopback names, so the SDK adds no DNS-rebinding allow-list.
    store = MemoryEventStore() if resumable else None
    return make_server().streamable_http_app(host="bench", event_store=store)


def roaming_app(settings: Settings, *, resumable: bool = True) -> Starlette:
    """The same server with sessions in the store (and, if `resumable`, events in Redis)."""
    return mcp_app(make_server(), settings, resumable=resumable)


if os.environ.get("SESSIONSTORE_REDIS_URL"):
    app = roaming_app(Settings())
