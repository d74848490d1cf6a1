"""The expiry index's time buckets read and changed with plain commands, for tests that
look at an entry or make drift by hand (as an operator's redis-cli would)."""

from __future__ import annotations

from sessionstore import RedisClient, SessionStore

#: The span of a level-0 bucket (ms); each level quarters it (the prelude's INDEX_SHAPE).
TOP_MS, SPLIT = 1 << 20, 4
#: The entries a bucket holds before the next level takes them, and the deepest level.
FULL, LEVELS = 128, 10


def span(name: str) -> tuple[int, int]:
    """The first and last millisecond of bucket `name` (``<level>:<start>``)."""
    level, start = (int(part) for part in name.split(":"))
    return start, start + TOP_MS // SPLIT**level - 1


async def buckets(redis: RedisClient, store: SessionStore, shard: int) -> dict[str, int]:
    """The buckets of `shard`'s index by name, with the count the index keeps for each."""
    counts = await redis.hgetall(store.keys.expiry_counts(shard))
    return {str(name): int(n) for name, n in counts.items()}


async def entries(
    redis: RedisClient, store: SessionStore, shard: int
) -> dict[str, tuple[str, float]]:
    """Every entry of `shard`'s index: session id -> (bucket name, deadline)."""
    found: dict[str, tuple[str, float]] = {}
    for name in await redis.zrange(store.keys.expiry(shard), 0, -1):
        bucket = store.keys.expiry_bucket(shard, name)
        for member, score in await redis.zrange(bucket, 0, -1, withscores=True):
            found[str(member)] = (str(name), float(score))
    return found


async def entry(redis: RedisClient, store: SessionStore, session_id: str) -> float | None:
    """The deadline of `session_id`'s entry (None: it has none)."""
    shard = store.session_keys(session_id).shard
    found = (await entries(redis, store, shard)).get(session_id)
    return None if found is None else found[1]


async def drop_entry(redis: RedisClient, store: SessionStore, session_id: str) -> None:
    """Remove `session_id`'s entry, keeping the bucket counts right (an index without it)."""
    shard = store.session_keys(session_id).shard
    found = (await entries(redis, store, shard)).get(session_id)
    assert found is not None, "the session has an entry to drop"
    name = found[0]
    await redis.zrem(store.keys.expiry_bucket(shard, name), session_id)
    if await redis.hincrby(store.keys.expiry_counts(shard), name, -1) <= 0:
        await redis.hdel(store.keys.expiry_counts(shard), name)
        await redis.zrem(store.keys.expiry(shard), name)


async def put_entry(redis: RedisClient, store: SessionStore, session_id: str, deadline: int) -> str:
    """Give `session_id` an entry at `deadline` by hand (any entry it had dropped first),
    in the level-0 bucket of that deadline, counts kept right; its record is not told.
    Returns the bucket's name."""
    return (await put_entries(redis, store, {session_id: deadline}))[session_id]


async def put_entries(
    redis: RedisClient, store: SessionStore, deadlines: dict[str, int]
) -> dict[str, str]:
    """`put_entry` for many sessions at once (each shard's entries read once, the changes
    pipelined). Returns each session's bucket name."""
    by_shard: dict[int, list[str]] = {}
    for session_id in deadlines:
        by_shard.setdefault(store.session_keys(session_id).shard, []).append(session_id)
    placed: dict[str, str] = {}
    for shard, ids in by_shard.items():
        found = await entries(redis, store, shard)
        counts = await buckets(redis, store, shard)
        calls = redis.pipeline(transaction=False)
        for session_id in ids:
            if session_id in found:
                name = found[session_id][0]
                calls.zrem(store.keys.expiry_bucket(shard, name), session_id)
                counts[name] -= 1
            deadline = deadlines[session_id]
            start = deadline - deadline % TOP_MS
            name = placed[session_id] = f"0:{start}"
            calls.zadd(store.keys.expiry_bucket(shard, name), {session_id: deadline})
            calls.zadd(store.keys.expiry(shard), {name: start})
            counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            if count > 0:
                calls.hset(store.keys.expiry_counts(shard), name, count)
            else:
                calls.hdel(store.keys.expiry_counts(shard), name)
                calls.zrem(store.keys.expiry(shard), name)
        await calls.execute()
    return placed
