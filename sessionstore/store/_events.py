"""Following the session events: one Redis Stream per shard.

Every transition script appends its event (``created``, ``expired``,
``deleted``, ``rotated``, ``resumed``) to its shard's stream inside the same
script, so a committed transition always has its event; streams are capped
near ``events_maxlen``. An event's id is ``<shard>:<stream entry id>``, unique
in the store, so readers de-duplicate by it.

`EventFollower` reads every shard from a position (now, the beginning, an
event id). `EventConsumer` reads through a consumer group, so a fleet of
replicas shares the events: each is delivered to one consumer, stays pending
until acknowledged, and is claimed by another consumer when its reader died
(at least once). On a single Redis all shards are read with one blocking
command; on Redis Cluster each shard's stream lives in its own slot, so the
shards are read with one command each, pipelined per node, and polled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import redis.exceptions as rex
from pydantic import BaseModel, ConfigDict
from redis.asyncio.cluster import RedisCluster

from .._keys import KeySpace
from .._redis import RedisClient, backend_errors
from .._time import ms_to_datetime, to_ms
from ..exceptions import InvalidInput
from ..settings import SessionSettings

_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_MAX_SEQ = 2**64 - 1
#: A position: "$" (from now), "0" (from the start), an event id, or entry ids by shard.
Position = str | Mapping[int, str]


class EventKind(StrEnum):
    """The kinds of session events (an `Event.kind` compares equal to these)."""

    #: A session was created.
    CREATED = "created"
    #: A session passed a deadline and was expired (by a sweep, resume or `expire`).
    EXPIRED = "expired"
    #: A session was closed by `delete`.
    DELETED = "deleted"
    #: A session moved to a new id (``new_session_id``).
    ROTATED = "rotated"
    #: An expired session was continued by a new one (``resumed_from``).
    RESUMED = "resumed"
    #: An upstream connection record changed state (``upstream``, ``state``; docs/upstream.md).
    UPSTREAM = "upstream"


class Event(BaseModel):
    """One session event read from a shard's stream.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: ``<shard>:<entry id>``: unique in the store; de-duplicate by it.
    id: str
    shard: int
    #: The stream entry id (``<ms>-<seq>``).
    entry_id: str
    #: One of `EventKind` (kept as text so a newer writer's kinds still read).
    kind: str
    session_id: str
    #: Redis time of the transition.
    at: datetime
    #: The other fields: ``reason``, ``user_id``, ``new_session_id``, ``resumed_from``...
    fields: dict[str, str]

    @classmethod
    def from_entry(cls, shard: int, entry_id: str, data: Mapping[str, str]) -> Event:
        """Build from a stream entry's fields."""
        extra = {k: v for k, v in data.items() if k not in ("kind", "session_id", "at")}
        return cls(
            id=f"{shard}:{entry_id}",
            shard=shard,
            entry_id=entry_id,
            kind=data["kind"],
            session_id=data["session_id"],
            at=ms_to_datetime(data["at"]),
            fields=extra,
        )

    @staticmethod
    def parse_id(event_id: str) -> tuple[int, str]:
        """Split an event id into shard and entry id.

        Raises:
            InvalidInput: not of the form ``<shard>:<ms>-<seq>``.
        """
        shard, _, entry = str(event_id).partition(":")
        if not shard.isdigit() or len(shard) > 4 or _ENTRY_ID.fullmatch(entry) is None:
            raise InvalidInput("an event id has the form <shard>:<ms>-<seq>")
        return int(shard), entry


def _read_timeout(redis: RedisClient, block: timedelta) -> int:
    """Block time in ms, kept under the client's socket timeout so a quiet stream
    is not mistaken for a dead Redis."""
    block_ms = to_ms(block)
    if isinstance(redis, RedisCluster):
        return block_ms
    socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        block_ms = min(block_ms, max(1, int(socket_timeout * 500)))
    return block_ms


class _Streams:
    """Reads several shard streams: one blocking command on a single Redis, one
    command per shard (pipelined per node) on a cluster."""

    def __init__(self, redis: RedisClient, keys: KeySpace, *, count: int, block: timedelta) -> None:
        if count < 1:
            raise InvalidInput("count must be positive")
        self.redis = redis
        self.keys = keys
        self.count = count
        self.block = block
        self.block_ms = _read_timeout(redis, block)
        self.shard_of = {keys.events(shard): shard for shard in range(keys.shards)}

    async def read(
        self, positions: Mapping[int, str], *, group: tuple[str, str] | None, wait: bool
    ) -> list[tuple[int, str, dict[str, str]]]:
        """Entries after `positions` as (shard, entry id, fields); fields empty for
        pending entries the stream trimmed away."""
        head: list[Any] = ["XREADGROUP", "GROUP", *group] if group else ["XREAD"]
        head += ["COUNT", self.count]
        streams = [self.keys.events(shard) for shard in positions]
        with backend_errors(head[0]):
            if isinstance(self.redis, RedisCluster):
                await self.redis.initialize()
                pipe = self.redis.pipeline()
                for key, position in zip(streams, positions.values(), strict=True):
                    node = self.redis.get_node_from_key(key)
                    pipe.execute_command(*head, "STREAMS", key, position, target_nodes=node)
                replies = [entry for reply in await pipe.execute() for entry in reply]
                if wait and not any(entries for _, entries in replies):
                    await asyncio.sleep(self.block.total_seconds())  # no BLOCK across slots
            else:
                block: list[Any] = ["BLOCK", self.block_ms] if wait else []
                ids = list(positions.values())
                replies = await self.redis.execute_command(*head, *block, "STREAMS", *streams, *ids)
        found = []
        for key, entries in replies or []:
            for entry_id, data in entries:
                found.append((self.shard_of[key], entry_id, data or {}))
        return found

    async def last_ids(self) -> dict[int, str]:
        """The newest entry id of every shard's stream ("0-0" when empty)."""
        pipe = self.redis.pipeline()
        for shard in range(self.keys.shards):
            pipe.xrevrange(self.keys.events(shard), count=1)
        with backend_errors("XREVRANGE"):
            replies = await pipe.execute()
        return {shard: (r[0][0] if r else "0-0") for shard, r in enumerate(replies)}


def _time_order(event: Event) -> tuple[int, int, int]:
    ms, _, seq = event.entry_id.partition("-")
    return int(ms), int(seq), event.shard


def _events(entries: list[tuple[int, str, dict[str, str]]]) -> list[Event]:
    """Entries as events in time order across shards (trimmed entries skipped)."""
    events = [Event.from_entry(shard, entry, data) for shard, entry, data in entries if data]
    return sorted(events, key=_time_order)


class EventFollower:
    """Follows every shard's events from a position, without a consumer group.

    ``async for event in EventFollower(redis, settings): ...`` runs until the
    caller stops. The follower does not own `redis`.

    Args:
        redis: a client from `create_client` (``decode_responses``).
        settings: the store's settings (key prefix, shards).
        after: ``"$"`` (events from now on), ``"0"`` (everything still in the
            streams), an event id (its shard from just after it, the other
            shards from the same millisecond: de-duplicate by event id), or a
            mapping of shard to entry id (e.g. a saved `cursor`).
        count: entries per shard per read.
        block: how long one read waits for new events.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: SessionSettings,
        *,
        after: Position = "$",
        count: int = 100,
        block: timedelta = timedelta(milliseconds=500),
    ) -> None:
        self._streams = _Streams(
            redis, KeySpace(settings.key_prefix, settings.shards), count=count, block=block
        )
        self._cursor = self._start(after, settings.shards)

    @staticmethod
    def _start(after: Position, shards: int) -> dict[int, str] | None:
        if isinstance(after, Mapping):
            cursor = {int(s): str(e) for s, e in after.items()}
            if any(s not in range(shards) or not _ENTRY_ID.fullmatch(e) for s, e in cursor.items()):
                raise InvalidInput("a cursor maps shards of this store to <ms>-<seq> entry ids")
            return {shard: cursor.get(shard, "0-0") for shard in range(shards)}
        if after == "$":
            return None  # resolved on the first read
        if after == "0":
            return dict.fromkeys(range(shards), "0-0")
        shard, entry = Event.parse_id(after)
        if shard >= shards:
            raise InvalidInput(f"event shard {shard} is not one of this store's {shards}")
        ms = int(entry.split("-")[0])
        same_ms = f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"
        return {s: entry if s == shard else same_ms for s in range(shards)}

    @property
    def cursor(self) -> dict[int, str]:
        """The last entry id read per shard; pass it as `after` to continue later."""
        return dict(self._cursor or {})

    async def read(self) -> list[Event]:
        """The next events (possibly none after waiting up to `block`)."""
        if self._cursor is None:
            self._cursor = await self._streams.last_ids()
        entries = await self._streams.read(self._cursor, group=None, wait=True)
        for shard, entry_id, _ in entries:
            self._cursor[shard] = entry_id
        return _events(entries)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            for event in await self.read():
                yield event


class EventConsumer:
    """Reads events through a consumer group: a fleet of replicas shares them.

    Each event goes to one consumer of the group and stays pending until
    `ack`. On its first reads a consumer gets back what it was given before and
    never acknowledged (a restart under the same name); every `claim_idle` it
    takes over entries another consumer left pending that long (a dead
    replica). Delivery is at least once: de-duplicate by `Event.id`.

    Args:
        redis: a client from `create_client` (``decode_responses``).
        settings: the store's settings.
        group: the group's name (one group per application that wants every event).
        consumer: this replica's name in the group (stable across restarts).
        start: where a group that does not exist yet starts: ``"$"`` or ``"0"``.
        count: entries per shard per read.
        block: how long one read waits for new events.
        claim_idle: pending entries idle this long are taken over.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: SessionSettings,
        *,
        group: str,
        consumer: str,
        start: str = "$",
        count: int = 100,
        block: timedelta = timedelta(milliseconds=500),
        claim_idle: timedelta = timedelta(seconds=60),
    ) -> None:
        for value, what in ((group, "group"), (consumer, "consumer")):
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,128}", value):
                raise InvalidInput(f"{what} must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")
        if start not in ("$", "0"):
            raise InvalidInput('start must be "$" or "0"')
        self.group, self.consumer, self.start = group, consumer, start
        self.claim_idle = claim_idle
        self._keys = KeySpace(settings.key_prefix, settings.shards)
        self._streams = _Streams(redis, self._keys, count=count, block=block)
        self._redis = redis
        self._ready = False
        #: Own pending entries still to re-read after a restart, per shard.
        self._backlog = dict.fromkeys(range(settings.shards), "0-0")
        self._claim_from = dict.fromkeys(range(settings.shards), "0-0")
        self._next_claim = 0.0

    async def setup(self) -> None:
        """Create the group on every shard's stream (idempotent)."""
        for shard in range(self._keys.shards):
            with backend_errors("XGROUP CREATE"):
                try:
                    await self._redis.xgroup_create(
                        self._keys.events(shard), self.group, id=self.start, mkstream=True
                    )
                except rex.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
        self._ready = True

    async def read(self) -> list[Event]:
        """The next events for this consumer: own backlog, then claimed, then new."""
        if not self._ready:
            await self.setup()
        names = (self.group, self.consumer)
        if self._backlog:
            entries = await self._streams.read(self._backlog, group=names, wait=False)
            done = set(self._backlog) - {shard for shard, _, _ in entries}
            for shard, entry_id, _ in entries:
                self._backlog[shard] = entry_id
            self._backlog = {s: e for s, e in self._backlog.items() if s not in done}
            await self._ack_entries([(s, e) for s, e, data in entries if not data])
            if entries:
                return _events(entries)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self.claim_idle.total_seconds() / 2
            claimed = await self._claim()
            if claimed:
                return claimed
        try:
            entries = await self._streams.read(
                dict.fromkeys(range(self._keys.shards), ">"), group=names, wait=True
            )
        except rex.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ready = False  # a stream was deleted: recreate the groups next time
            return []
        return _events(entries)

    async def _claim(self) -> list[Event]:
        pipe = self._redis.pipeline()
        idle_ms = to_ms(self.claim_idle)
        for shard in range(self._keys.shards):
            pipe.xautoclaim(
                self._keys.events(shard),
                self.group,
                self.consumer,
                idle_ms,
                start_id=self._claim_from[shard],
                count=self._streams.count,
            )
        with backend_errors("XAUTOCLAIM"):
            replies = await pipe.execute()
        events = []
        for shard, reply in enumerate(replies):
            self._claim_from[shard] = reply[0]
            events += _events([(shard, entry_id, data or {}) for entry_id, data in reply[1]])
        return events

    async def ack(self, *events: Event) -> int:
        """Acknowledge handled events; returns how many were still pending."""
        return await self._ack_entries([(e.shard, e.entry_id) for e in events])

    async def _ack_entries(self, entries: list[tuple[int, str]]) -> int:
        if not entries:
            return 0
        pipe = self._redis.pipeline()
        for shard, entry_id in entries:
            pipe.xack(self._keys.events(shard), self.group, entry_id)
        with backend_errors("XACK"):
            return sum(int(n) for n in await pipe.execute())

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            for event in await self.read():
                yield event
