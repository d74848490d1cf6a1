"""`RedisEventStore`: the SDK's `EventStore` on one bounded Redis stream per MCP session.

The SDK's `EventStore` is not told which session an event belongs to, but the
roaming manager builds one transport per session, so it gives each transport
its own `RedisEventStore`, bound to the session: events go to the session's
stream (``SessionKeys.mcp_events``, in the session's hash tag, so the scripts
that end, expire or rotate the session drop it with the record), capped near
``max_events`` and given the sessions' lifetime as TTL.

The standalone GET stream's events have a key of their own
(``SessionKeys.mcp_standalone``), so its tail does not wake for every request's
events. Event ids are ``<tag>.<r|g>.<entry id>``: the tag is derived from the
session id, ``g`` marks the standalone stream. An event id of another session
(or a malformed one) is recognised without reading Redis and replays nothing.

A resumed stream is served from Redis, not from the replica's memory: stored
events after the client's last one, then the stream's new events as they are
written (by whichever replica runs the request) until the request's final
response, so the client gets every message once and in order wherever it
reconnects. A GET stream is tailed until the client leaves or the session ends.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

import anyio
from mcp_types import (
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from .. import SessionStore
from .._redis import backend_errors
from ..exceptions import SessionStoreError
from ._metrics import McpMetrics
from ._sdk import EventCallback, EventId, EventMessage, EventStore, StreamId

logger = logging.getLogger("sessionstore.mcp")

_EVENT_ID = re.compile(r"^([A-Za-z0-9_-]{8})\.([rg])\.([0-9]{1,20}-[0-9]{1,20})$")
#: The SDK's stream id of the standalone GET stream, whose events have a key of their own.
STANDALONE = "_GET_stream"
#: Entries read per XRANGE / XREAD.
_BATCH = 100
#: How long one tailing read waits before checking whether to stop (ms).
_BLOCK_MS = 1000
#: The stream id under which a client's answer to a server-initiated request is relayed
#: to the replica that sent the request (not an SDK stream id: those are request ids).
ANSWERS = "_answers"


def session_tag(session_id: str) -> str:
    """The 8-character tag that marks event ids of `session_id`."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest)[:8].decode()


def parse_event_id(event_id: str, session_id: str) -> tuple[str, str] | None:
    """(``r`` or ``g``, stream entry id) if `event_id` is an event id of `session_id`, else
    None: ``g`` events are the standalone GET stream's, ``r`` the requests'."""
    match = _EVENT_ID.fullmatch(event_id)
    if match is None or match.group(1) != session_tag(session_id):
        return None
    return match.group(2), match.group(3)


class RedisEventStore(EventStore):
    """The events of one MCP session's SSE streams, in its Redis stream.

    Args:
        store: the session store (client, key space, lifetimes).
        session_id: the session this store belongs to.
        max_events: the stream is capped near this many entries.
        stopped: tells a tailing replay to stop (the local copy was dropped).
        on_request: told (request id, entry id) of every server-initiated request
            stored, so the replica can wait for its answer wherever it lands.
        metrics: counters to update.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        *,
        max_events: int = 1000,
        stopped: Callable[[], bool] = lambda: False,
        on_request: Callable[[str, str], None] | None = None,
        metrics: McpMetrics | None = None,
    ) -> None:
        self._on_request = on_request
        self._store = store
        self._session_id = session_id
        keys = store.keys.session(session_id)
        #: The requests' events (and relayed answers) apart from the standalone stream's,
        #: so a tail of the one does not wake for the other.
        self._keys = {"r": keys.mcp_events, "g": keys.mcp_standalone}
        self._tag = session_tag(session_id)
        self._max_events = max_events
        self._ttl_ms = int(store.settings.absolute_lifetime.total_seconds() * 1000)
        self._stopped = stopped
        self._metrics = metrics or McpMetrics()

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Append one event (None: a priming event) to the session's stream; one round trip."""
        data = "" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True)
        redis = self._store.redis
        kind = "g" if stream_id == STANDALONE else "r"
        key = self._keys[kind]
        with backend_errors("storing an MCP event"):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.xadd(
                    key,
                    {"s": stream_id, "m": data},
                    maxlen=self._max_events,
                    approximate=True,
                )
                pipe.pexpire(key, self._ttl_ms)
                entry_id, _ = await pipe.execute()
        self._metrics.events_stored.inc()
        if self._on_request is not None and isinstance(message, JSONRPCRequest):
            self._on_request(str(message.id), entry_id)
        return f"{self._tag}.{kind}.{entry_id}"

    async def relay_answer(self, message: JSONRPCResponse | JSONRPCError) -> None:
        """Put a client's answer to a server-initiated request in the session's stream,
        for the replica that sent the request (one round trip)."""
        await self.store_event(ANSWERS, message)

    async def answers_after(self, cursor: str) -> tuple[str, list[JSONRPCResponse | JSONRPCError]]:
        """Relayed answers after entry `cursor` (waits up to a second for one); returns
        the new cursor and the answers."""
        with backend_errors("reading MCP events"):
            reply = await self._store.redis.xread(
                {self._keys["r"]: cursor}, count=_BATCH, block=_BLOCK_MS
            )
        found: list[JSONRPCResponse | JSONRPCError] = []
        for _, entries in reply or ():
            for entry_id, fields in entries:
                cursor = entry_id
                if fields.get("s") != ANSWERS:
                    continue
                try:
                    message = jsonrpc_message_adapter.validate_json(fields["m"], by_name=False)
                except (ValidationError, KeyError):
                    continue
                if isinstance(message, JSONRPCResponse | JSONRPCError):
                    found.append(message)
        return cursor, found

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the events of `last_event_id`'s stream after it, then the stream's new ones.

        A request's stream ends with its final response; a GET stream runs until
        the client leaves or the session ends. Returns None, so the SDK does not
        also wait for local messages: everything comes from Redis.
        """
        parsed = parse_event_id(last_event_id, self._session_id)
        if parsed is None:
            return None
        key = self._keys[parsed[0]]
        after = parsed[1]
        stream_id = await self._stream_of(key, after)
        if stream_id is None:
            return None
        cursor = await self._send_stored(key, stream_id, after, send_callback)
        if cursor is not None:
            await self._tail(key, stream_id, cursor, send_callback)
        return None

    async def _stream_of(self, key: str, entry_id: str) -> str | None:
        with backend_errors("reading MCP events"):
            found = await self._store.redis.xrange(key, entry_id, entry_id, count=1)
        if not found:
            return None
        stream = found[0][1].get("s")
        return stream if isinstance(stream, str) else None

    async def _send_stored(
        self, key: str, stream_id: str, after: str, send: EventCallback
    ) -> str | None:
        """Send the stored events after `after`; the cursor to tail from, or None once the
        final response was sent."""
        cursor = after
        while True:
            with backend_errors("reading MCP events"):
                entries = await self._store.redis.xrange(key, f"({cursor}", "+", count=_BATCH)
            for entry_id, fields in entries:
                cursor = entry_id
                if await self._send(stream_id, entry_id, fields, send):
                    return None
            if len(entries) < _BATCH:
                return cursor

    async def _tail(self, key: str, stream_id: str, cursor: str, send: EventCallback) -> None:
        while not self._stopped():
            try:
                with backend_errors("reading MCP events"):
                    reply = await self._store.redis.xread(
                        {key: cursor}, count=_BATCH, block=_BLOCK_MS
                    )
            except SessionStoreError:
                # Redis is slow or away: keep the client's stream open and read on from
                # the cursor once it answers (the session's own checks end it if needed).
                logger.warning("MCP events unreadable; the stream waits", exc_info=True)
                await anyio.sleep(_BLOCK_MS / 1000)
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    if await self._send(stream_id, entry_id, fields, send):
                        return

    async def _send(
        self, stream_id: str, entry_id: str, fields: dict[str, Any], send: EventCallback
    ) -> bool:
        """Send one stored entry if it is of `stream_id`; True once it was the final response."""
        if fields.get("s") != stream_id or not fields.get("m"):
            return False  # another stream's event, or a priming event
        try:
            message = jsonrpc_message_adapter.validate_json(fields["m"], by_name=False)
        except ValidationError:
            return False
        await send(EventMessage(message, f"{self._tag}-{entry_id}"))
        self._metrics.events_replayed.inc()
        return isinstance(message, JSONRPCResponse | JSONRPCError) and str(message.id) == stream_id
