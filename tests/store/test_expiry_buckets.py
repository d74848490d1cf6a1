"""The expiry index as compact time buckets, on a real Redis (standalone and Cluster):
buckets fill and spill level by level, endings remove from the right bucket, empty
buckets leave, and the counts stay exact through every transition."""

from __future__ import annotations

import random
from datetime import timedelta

from sessionstore import (
    RedisClient,
    SessionExpired,
    SessionStatus,
    SessionStore,
    repair_store,
    sweep_store,
)
from sessionstore.store import list_by_status
from tests.bulk import create_many
from tests.expiry_index import FULL, LEVELS, SPLIT, TOP_MS, buckets, entries, entry, put_entry, span
from tests.polling import until_raises

DUE = timedelta(milliseconds=1)


async def now_ms(redis: RedisClient) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def assert_index_exact(redis: RedisClient, store: SessionStore) -> int:
    """Every shard's index agrees with itself and with the records: each bucket's count
    is its size, the root and the counts name the same buckets, every entry lies in its
    bucket's span and is the entry its record says (`due`, or the one create wrote),
    and every live record has exactly one. Returns the number of entries."""
    total = 0
    for shard in range(store.keys.shards):
        counts = await buckets(redis, store, shard)
        root = {str(n) for n in await redis.zrange(store.keys.expiry(shard), 0, -1)}
        assert root == set(counts), "the root and the counts name the same buckets"
        for name, count in counts.items():
            bucket = store.keys.expiry_bucket(shard, name)
            assert await redis.zcard(bucket) == count > 0, name
            start, _ = span(name)
            assert await redis.zscore(store.keys.expiry(shard), name) == start
        found = await entries(redis, store, shard)
        assert sum(counts.values()) == len(found), "no id in two buckets"
        pattern = store.keys.session_pattern(shard)
        records = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        prefix = store.keys.session_prefixes(shard)["session"]
        assert {key[len(prefix) :] for key in records} == set(found)
        for session_id, (name, score) in found.items():
            start, last = span(name)
            assert start <= score <= last, (name, score)
            record = store.session_keys(session_id).record
            due, created, idle, life = await redis.hmget(
                record, "due", "created", "idle_ms", "life_end"
            )
            said = int(due) if due else min(int(created) + int(idle), int(life))
            assert score == said, "the record says where its entry is"
        total += len(found)
    counts_now = await store.counts()
    assert counts_now.active + counts_now.overdue == total
    return total


async def test_a_full_bucket_spills_to_the_next_level(
    store: SessionStore, redis: RedisClient
) -> None:
    """Sessions created together share their deadlines' level-0 bucket until it holds
    128; the next go one level down, into the quarter of its span their deadlines are
    in; every bucket stays a listpack."""
    await create_many(store, 300, shard=0)
    counts = await buckets(redis, store, 0)
    assert sum(counts.values()) == 300
    assert max(counts.values()) == FULL
    by_level: dict[int, int] = {}
    for name, count in counts.items():
        level = int(name.split(":")[0])
        by_level[level] = by_level.get(level, 0) + count
        encoding = await redis.object("encoding", store.keys.expiry_bucket(0, name))
        assert encoding == "listpack", name
    assert by_level[0] == FULL, "the shallowest bucket fills first"
    assert min(by_level) == 0 and len(by_level) >= 3, by_level
    await assert_index_exact(redis, store)


async def test_a_burst_with_one_deadline_fills_its_chain_level_by_level(
    store: SessionStore, redis: RedisClient
) -> None:
    """More than 128 entries at one deadline (active sessions the sweep puts back at the
    same deadline) fill that deadline's chain: 128 in each bucket from level 0 down; the
    records say where their entries are, and ending them empties every bucket."""
    ids = await create_many(store, 300, shard=1)
    deadline = await now_ms(redis) + 600_000
    calls = redis.pipeline(transaction=False)
    for key in (store.keys.expiry(1), store.keys.expiry_counts(1)):
        calls.delete(key)
    for name in await buckets(redis, store, 1):
        calls.delete(store.keys.expiry_bucket(1, name))
    for session_id in ids:  # every entry due long ago (by hand), every record active
        calls.hset(store.session_keys(session_id).record, "idle_end", deadline)
        calls.zadd(store.keys.expiry_bucket(1, "0:0"), {session_id: 1})
    calls.hset(store.keys.expiry_counts(1), "0:0", len(ids))
    calls.zadd(store.keys.expiry(1), {"0:0": 0})
    await calls.execute()

    report = await sweep_store(store)

    assert (report.rescheduled, report.expired) == (300, 0)
    counts = await buckets(redis, store, 1)
    widths = [TOP_MS // SPLIT**level for level in range(LEVELS + 1)]
    chain = {f"{level}:{deadline - deadline % width}" for level, width in enumerate(widths)}
    assert set(counts) <= chain
    assert sorted(counts.values(), reverse=True) == [FULL, FULL, 300 - 2 * FULL]
    assert {int(n.split(":")[0]) for n in counts} == {0, 1, 2}
    assert await assert_index_exact(redis, store) == 300
    for session_id in ids[:150]:
        await store.delete(session_id)
    assert await assert_index_exact(redis, store) == 150
    for session_id in ids[150:]:
        await store.expire(session_id)
    assert await redis.exists(store.keys.expiry(1), store.keys.expiry_counts(1)) == 0
    assert (await store.counts()).active == 0


async def test_endings_remove_the_entry_from_its_bucket(
    store: SessionStore, redis: RedisClient
) -> None:
    """Delete, expire, rotate (the new id takes the old one's place) and resume of an
    overdue session each take the entry out of the bucket it is in, at any level; an
    emptied bucket leaves the root and the counts."""
    ids = await create_many(store, 300, shard=2)
    placed = await entries(redis, store, 2)
    deepest = max(ids, key=lambda i: int(placed[i][0].split(":")[0]))
    shallow = next(i for i in ids if placed[i][0].startswith("0:"))
    await store.delete(deepest)
    await store.expire(shallow)
    after = await entries(redis, store, 2)
    assert deepest not in after and shallow not in after
    rotated_from = ids[200]
    rotated = await store.rotate(rotated_from)
    after = await entries(redis, store, 2)
    assert rotated_from not in after
    assert after[rotated.id] == placed[rotated_from], "same bucket, same deadline"
    await assert_index_exact(redis, store)

    lone = await store.create(idle_timeout=DUE)
    await until_raises(lambda: store.get(lone.id), SessionExpired)
    shard = store.session_keys(lone.id).shard
    before = set(await buckets(redis, store, shard))
    resumed = await store.resume(lone.id)
    assert resumed.id != lone.id
    assert await entry(redis, store, lone.id) is None
    assert await entry(redis, store, resumed.id) is not None
    await store.delete(resumed.id)
    left = set(await buckets(redis, store, shard))
    assert left <= before, "no bucket of the two sessions stayed behind empty"
    await assert_index_exact(redis, store)


async def test_an_emptied_index_leaves_no_key(store: SessionStore, redis: RedisClient) -> None:
    """A shard whose last session ended holds no index key: no root, no counts, no
    bucket."""
    made = await store.create()
    shard = store.session_keys(made.id).shard
    [name] = await buckets(redis, store, shard)
    await store.delete(made.id)
    assert (
        await redis.exists(
            store.keys.expiry(shard),
            store.keys.expiry_counts(shard),
            store.keys.expiry_bucket(shard, name),
        )
        == 0
    )


async def test_counts_stay_exact_through_a_mix_of_transitions(
    store: SessionStore, redis: RedisClient
) -> None:
    """Creates, deletes, expiries, rotations, resumes, slides, sweeps (expiring and
    putting back) and repair in a random order keep every count equal to the entries
    and the entries to the live records."""
    rng = random.Random(7)
    live = await create_many(store, 400)
    short = await create_many(store, 60, idle_timeout=DUE)
    for _ in range(120):
        choice = rng.randrange(5)
        session_id = live.pop(rng.randrange(len(live)))
        if choice == 0:
            await store.delete(session_id)
        elif choice == 1:
            await store.expire(session_id)
        elif choice == 2:
            live.append((await store.rotate(session_id)).id)
        else:
            await store.touch(session_id)
            live.append(session_id)
    # Entries of active sessions come due before their records (as after slides): the
    # sweep puts them back, and expires the short ones.
    now = await now_ms(redis)
    for session_id in live[:50]:
        await put_entry(redis, store, session_id, now - 1000)
    await until_raises(lambda: store.get(short[-1]), SessionExpired)  # the last one made
    expired = await sweep_store(store)
    assert (expired.expired, expired.rescheduled) == (60, 50)
    await assert_index_exact(redis, store)
    for session_id in short[:5]:
        resumed = await store.resume(session_id)
        live.append(resumed.id)
    await assert_index_exact(redis, store)
    assert (await repair_store(store)).fixed == 0
    counts = await store.counts()
    assert (counts.active, counts.overdue) == (len(live), 0)
    listed = await list_by_status(store, SessionStatus.ACTIVE, limit=1000)
    assert {s.id for s in listed} == set(live)


async def test_repair_indexes_the_records_of_a_development_build_and_drops_its_index(
    store: SessionStore, redis: RedisClient
) -> None:
    """A development build kept one sorted set per shard (`<prefix>:{N}:expiry`): repair
    puts its live records in the buckets and deletes that set."""
    made = await store.create()
    keys = store.session_keys(made.id)
    shard = keys.shard
    [name] = await buckets(redis, store, shard)
    for key in (
        store.keys.expiry(shard),
        store.keys.expiry_counts(shard),
        store.keys.expiry_bucket(shard, name),
    ):
        await redis.delete(key)
    legacy = store.keys.legacy_expiry(shard)
    await redis.zadd(legacy, {made.id: made.expires_at.timestamp() * 1000})

    report = await repair_store(store)

    assert report.expiry_added == 1
    assert await redis.exists(legacy) == 0
    assert await entry(redis, store, made.id) is not None
    await assert_index_exact(redis, store)
