"""Creating many sessions fast, reading back what the streams say happened, and
records as earlier builds wrote them.

`create_many` pipelines the real ``create`` script (as `SessionStore.create`
calls it), thousands per round trip, instead of awaiting thousands of calls.
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from datetime import timedelta

from sessionstore import Event, RedisClient, SessionStore, new_session_id
from sessionstore._scripts import Arg, Batch
from sessionstore.store._lua import script
from sessionstore.store._payload import encode_metadata
from tests.expiry_index import put_entries


async def create_many(
    store: SessionStore,
    count: int,
    *,
    idle_timeout: timedelta | None = None,
    user_id: str = "",
    shard: int | None = None,
    chunk: int = 2000,
) -> list[str]:
    """Create `count` sessions with pipelined ``create`` scripts; returns their ids.

    Sessions go to random shards, or all to `shard`.
    """
    cfg = store.settings
    idle_ms = int((idle_timeout or cfg.idle_timeout).total_seconds() * 1000) or 1
    ids: list[str] = []
    for start in range(0, count, chunk):
        batch = Batch(store.redis)
        for _ in range(min(chunk, count - start)):
            session_id = new_session_id(secrets.randbelow(cfg.shards) if shard is None else shard)
            args: list[Arg] = [
                session_id,
                idle_ms,
                int(cfg.absolute_lifetime.total_seconds() * 1000),
                int(cfg.sweep_grace.total_seconds() * 1000),
                cfg.events_maxlen,
                user_id,
                "",
                encode_metadata(None, cfg),
            ]
            batch.script(script("create"), store.keys.session(session_id).ordered(), args)
            ids.append(session_id)
        replies = await batch.execute()
        assert all(reply[0] == "ok" for reply in replies)
    return ids


async def all_events(redis: RedisClient, store: SessionStore) -> list[Event]:
    """Every event still in the shard streams (XRANGE, oldest first per shard)."""
    events = []
    for shard in range(store.keys.shards):
        for entry_id, data in await redis.xrange(store.keys.events(shard)):
            events.append(Event.from_entry(shard, entry_id, data))
    return events


def expired_per_session(events: list[Event]) -> Counter[str]:
    """How many distinct `expired` events each session has (de-duplicated by event id)."""
    unique: dict[str, Event] = {e.id: e for e in events if e.kind == "expired"}
    return Counter(e.session_id for e in unique.values())


def kinds_per_session(events: list[Event]) -> dict[str, Counter[str]]:
    """Event kinds counted per session id (de-duplicated by event id)."""
    unique = {e.id: e for e in events}
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for event in unique.values():
        out[event.session_id][event.kind] += 1
    return out


async def backdate(store: SessionStore, session_ids: list[str], by: timedelta) -> None:
    """Make sessions due `by` ago, as after worker downtime: their record's idle
    deadline and their expiry-index entry are moved back together (the record saying
    where its entry is, as after the sweep moved it)."""
    redis = store.redis
    seconds, micros = await redis.time()
    deadline = int(seconds) * 1000 + int(micros) // 1000 - int(by.total_seconds() * 1000)
    await put_entries(redis, store, dict.fromkeys(session_ids, deadline))
    calls = Batch(redis)
    for session_id in session_ids:
        record = store.session_keys(session_id).record
        calls.command("HSET", record, "idle_end", deadline, "due", deadline)
    await calls.execute()


#: The long field names of earlier builds, by the short name that replaced each.
LONG_NAMES = {
    "created": "created_at",
    "idle_ms": "idle_timeout_ms",
    "idle_end": "idle_deadline",
    "life_end": "absolute_deadline",
    "attrs": "state_count",
    "attr_bytes": "state_bytes",
}


async def write_with_long_names(redis: RedisClient, record: str) -> dict[str, str]:
    """Write the session record `record` again as earlier builds named its fields
    (LONG_NAMES); returns the fields now stored."""
    fields = await redis.hgetall(record)
    assert set(LONG_NAMES) <= set(fields), "a record with state has every short name"
    await redis.delete(record)
    await redis.hset(record, mapping={LONG_NAMES.get(n, n): v for n, v in fields.items()})
    return await redis.hgetall(record)
