"""`RedisEventStore`: the SDK's `EventStore` on one bounded Redis stream per MCP session.

The SDK's `EventStore` is not told which session an event belongs to, but the
roaming manager builds one transport per session, so it gives each transport
its own `RedisEventStore`, bound to the session: events go to the session's
stream (``SessionKeys.mcp_events``, in the session's hash tag, so the scripts
that end, expire or rotate the session drop it with the record), capped near
``max_events`` and given the sessions' lifetime as TTL.

The standalone GET stream's events have a key of their own
(``SessionKeys.mcp_standalone``), so its tail does not wake for every request's
events. Event ids are ``<tag>.<kind>.<position>``, the tag derived from the
session id, so an event id of another session (or a malformed one) is
recognised without reading Redis and replays nothing:

- ``r`` / ``g`` and a stream entry id: a stored event of the requests' stream or
  of the standalone stream;
- ``p``, the Redis time the request began and the request's nonce: a request's
  priming event. It is not written: every event of the request carries the
  nonce (``q``), so a resume from it reads the request's events from that time
  on (less `CLOCK_STEP_MS`, so a Redis clock stepping back loses nothing);
- ``f`` and the nonce: a final response written with the request lease's return
  (`RequestWrites`); nothing follows it, so a resume from it replays nothing.

A request served with a lease therefore stores its events in no round trip of
their own when it sends nothing before its response: the response's write rides
in the round trip that returns the lease. Messages before the response (progress,
notifications, server-initiated requests) are written one round trip each, in
order, before they are sent.

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
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
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
from .._scripts import Arg, Batch, BatchCall, ScriptCall, ScriptLibrary
from ..exceptions import SessionStoreError
from ._metrics import McpMetrics
from ._sdk import EventCallback, EventId, EventMessage, EventStore, StreamId

logger = logging.getLogger("sessionstore.mcp")
_scripts = ScriptLibrary("sessionstore.mcp")

_EVENT_ID = re.compile(
    r"^([A-Za-z0-9_-]{8})\."
    r"(?:([rg])\.([0-9]{1,20}-[0-9]{1,20})|p\.([0-9]{1,15})\.([0-9a-f]{16})|f\.([0-9a-f]{16}))$"
)
#: The SDK's stream id of the standalone GET stream, whose events have a key of their own.
STANDALONE = "_GET_stream"
#: Entries read per XRANGE / XREAD.
_BATCH = 100
#: How long one tailing read waits before checking whether to stop (ms).
_BLOCK_MS = 1000
#: The stream id under which a client's answer to a server-initiated request is relayed
#: to the replica that sent the request (not an SDK stream id: those are request ids).
ANSWERS = "_answers"
#: A resume from a priming event reads from this long before the request began, so a
#: Redis clock that steps back by up to this much between the two loses no event.
CLOCK_STEP_MS = 60_000
#: Requests whose response is still to come that one store keeps a nonce for (a
#: request cancelled without a response is forgotten once this many are newer).
_OPEN_STREAMS = 1000
#: The largest stream entry sequence number (an id ``<ms>-<seq>``).
_MAX_SEQ = 2**64 - 1


def session_tag(session_id: str) -> str:
    """The 8-character tag that marks event ids of `session_id`."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest)[:8].decode()


@dataclass(frozen=True)
class EventPosition:
    """Where an event id of this session points (see the module docstring)."""

    #: ``r``, ``g`` (stored events), ``p`` (a request's priming) or ``f`` (a final response).
    kind: str
    #: The stream entry id (``r``, ``g``), else empty.
    entry: str = ""
    #: The Redis time the request began, in ms (``p``).
    since_ms: int = 0
    #: The request's nonce (``p``, ``f``).
    nonce: str = ""


def parse_event_id(event_id: str, session_id: str) -> EventPosition | None:
    """Where `event_id` points if it is an event id of `session_id`, else None."""
    match = _EVENT_ID.fullmatch(event_id)
    if match is None or match.group(1) != session_tag(session_id):
        return None
    kind, entry, since, primed, final = match.group(2, 3, 4, 5, 6)
    if kind is not None:
        return EventPosition(kind, entry=entry)
    if primed is not None:
        return EventPosition("p", since_ms=int(since), nonce=primed)
    return EventPosition("f", nonce=final)


@dataclass
class RequestWrites:
    """The request being served on this replica, as its events need to know it.

    The manager binds one to `CURRENT_REQUEST` while the SDK handles the request.
    """

    #: The Redis time the request began (its lease was taken), in ms; 0 if unknown.
    since_ms: int
    #: Commands sent with the request lease's return (`TrackedLease.riders`); None
    #: when there is no lease to ride with, or once it is being returned.
    riders: list[BatchCall] | None = None

    def close(self) -> None:
        """The lease is being returned: later events are written on their own."""
        self.riders = None


#: The request the SDK is handling in this context, if the manager bound one.
CURRENT_REQUEST: ContextVar[RequestWrites | None] = ContextVar(
    "sessionstore_mcp_request", default=None
)


@dataclass
class _OpenStream:
    """A request stream primed here whose response is still to come."""

    nonce: str
    writes: RequestWrites | None


@dataclass(frozen=True)
class _Match:
    """Which stored entries belong to the stream being replayed."""

    #: The SDK stream id (None: any, the nonce decides).
    stream: str | None
    #: The request's nonce (None: entries without one).
    nonce: str | None

    def __call__(self, fields: dict[str, Any]) -> bool:
        if self.stream is not None and fields.get("s") != self.stream:
            return False
        return self.nonce is None or fields.get("q") == self.nonce


def _before(ms: int) -> str:
    """The stream entry id just before the first one of millisecond `ms`."""
    return "0-0" if ms <= 0 else f"{ms - 1}-{_MAX_SEQ}"


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
        self._record = keys.record
        #: Whether this store's writes have marked the session's record (`extras`): its
        #: first write does, through the `mcp_event` script, so ending the session drops
        #: the streams; the later ones are plain XADD + PEXPIRE (the field stays).
        self._marked = False
        self._tag = session_tag(session_id)
        self._max_events = max_events
        self._ttl_ms = int(store.settings.absolute_lifetime.total_seconds() * 1000)
        self._stopped = stopped
        self._metrics = metrics or McpMetrics()
        self._open: dict[str, _OpenStream] = {}

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Append one event (None: a priming event) to the session's stream.

        A request's priming event is not written (its id names the request); a
        response that can ride with its request's lease return is queued there;
        anything else is written now, one round trip.
        """
        kind = "g" if stream_id == STANDALONE else "r"
        if message is None and kind == "r":
            return self._prime(stream_id)
        data = "" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True)
        fields: dict[str, Arg] = {"s": stream_id, "m": data}
        stream = self._open.get(stream_id) if kind == "r" else None
        if stream is not None:
            fields["q"] = stream.nonce
            if isinstance(message, JSONRPCResponse | JSONRPCError) and str(message.id) == stream_id:
                del self._open[stream_id]
                riders = stream.writes.riders if stream.writes is not None else None
                if riders is not None:
                    riders.extend(self._commands(self._keys["r"], fields))
                    # The mark rides in the same script as the entry: were the round
                    # trip lost, a later write's stream lives to its TTL at most.
                    self._marked = True
                    self._metrics.events_stored.inc()
                    return f"{self._tag}.f.{stream.nonce}"
        entry_id = await self._write(self._keys[kind], fields)
        if self._on_request is not None and isinstance(message, JSONRPCRequest):
            self._on_request(str(message.id), entry_id)
        return f"{self._tag}.{kind}.{entry_id}"

    def _prime(self, stream_id: str) -> EventId:
        """The priming event id of request stream `stream_id`; nothing is written."""
        writes = CURRENT_REQUEST.get()
        nonce = secrets.token_hex(8)
        self._open.pop(stream_id, None)
        self._open[stream_id] = _OpenStream(nonce, writes)
        while len(self._open) > _OPEN_STREAMS:
            del self._open[next(iter(self._open))]
        since = writes.since_ms if writes is not None else 0
        return f"{self._tag}.p.{since}.{nonce}"

    def _commands(self, key: str, fields: dict[str, Arg]) -> list[BatchCall]:
        """The write of one entry: the `mcp_event` script until the record is marked
        (see `_marked`), then XADD + PEXPIRE; the entry id is the first reply."""
        pairs = [part for item in fields.items() for part in item]
        if not self._marked:
            args: list[Arg] = [self._max_events, self._ttl_ms, *pairs]
            return [ScriptCall(_scripts("mcp_event"), [self._record, key], args)]
        return [
            ("XADD", key, "MAXLEN", "~", self._max_events, "*", *pairs),
            ("PEXPIRE", key, self._ttl_ms),
        ]

    async def _write(self, key: str, fields: dict[str, Arg]) -> str:
        """Append one entry now (one round trip); returns its entry id."""
        batch = Batch(self._store.redis)
        for command in self._commands(key, fields):
            batch.add(command)
        with backend_errors("storing an MCP event"):
            entry_id = (await batch.execute())[0]
        self._marked = True
        self._metrics.events_stored.inc()
        return entry_id if isinstance(entry_id, str) else bytes(entry_id).decode()

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
        position = parse_event_id(last_event_id, self._session_id)
        if position is None or position.kind == "f":
            return None  # not of this session, or nothing follows a final response
        if position.kind == "p":
            key = self._keys["r"]
            match = _Match(stream=None, nonce=position.nonce)
            after = _before(position.since_ms - CLOCK_STEP_MS)
        else:
            key = self._keys[position.kind]
            fields = await self._entry(key, position.entry)
            stream = fields.get("s") if fields is not None else None
            if not isinstance(stream, str):
                return None
            nonce = fields.get("q") if fields is not None else None
            match = _Match(stream=stream, nonce=nonce if isinstance(nonce, str) else None)
            after = position.entry
        kind = "g" if key == self._keys["g"] else "r"
        cursor = await self._send_stored(key, kind, match, after, send_callback)
        if cursor is not None:
            await self._tail(key, kind, match, cursor, send_callback)
        return None

    async def _entry(self, key: str, entry_id: str) -> dict[str, Any] | None:
        with backend_errors("reading MCP events"):
            found = await self._store.redis.xrange(key, entry_id, entry_id, count=1)
        if not found:
            return None
        fields: dict[str, Any] = found[0][1]
        return fields

    async def _send_stored(
        self, key: str, kind: str, match: _Match, after: str, send: EventCallback
    ) -> str | None:
        """Send the stored events after `after`; the cursor to tail from, or None once the
        final response was sent."""
        cursor = after
        while True:
            with backend_errors("reading MCP events"):
                entries = await self._store.redis.xrange(key, f"({cursor}", "+", count=_BATCH)
            for entry_id, fields in entries:
                cursor = entry_id
                if await self._send(kind, match, entry_id, fields, send):
                    return None
            if len(entries) < _BATCH:
                return cursor

    async def _tail(
        self, key: str, kind: str, match: _Match, cursor: str, send: EventCallback
    ) -> None:
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
                    if await self._send(kind, match, entry_id, fields, send):
                        return

    async def _send(
        self, kind: str, match: _Match, entry_id: str, fields: dict[str, Any], send: EventCallback
    ) -> bool:
        """Send one stored entry if it is of the replayed stream; True once it was the
        final response."""
        if not match(fields) or not fields.get("m"):
            return False  # another stream's event, or a priming event
        try:
            message = jsonrpc_message_adapter.validate_json(fields["m"], by_name=False)
        except ValidationError:
            return False
        await send(EventMessage(message, f"{self._tag}.{kind}.{entry_id}"))
        self._metrics.events_replayed.inc()
        return isinstance(message, JSONRPCResponse | JSONRPCError) and str(
            message.id
        ) == fields.get("s")
