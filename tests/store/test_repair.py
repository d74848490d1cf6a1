"""The repair: drift is made directly in Redis, then repaired and reported exactly."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from sessionstore import (
    InvalidInput,
    RedisClient,
    SessionStatus,
    SessionStore,
    Tombstone,
    repair_store,
)
from tests.bulk import all_events, create_many
from tests.expiry_index import drop_entry, entry, put_entry


async def test_a_live_record_missing_from_the_expiry_index_is_put_back(
    store: SessionStore, redis: RedisClient
) -> None:
    """Without its entry a session is neither counted nor ever swept; repair adds it."""
    made = await store.create()
    others = await create_many(store, 5)
    await drop_entry(redis, store, made.id)
    assert (await store.counts()).active == 5

    report = await repair_store(store)

    assert (report.expiry_added, report.fixed, report.records_scanned) == (1, 1, 6)
    assert await entry(redis, store, made.id) == made.expires_at.timestamp() * 1000
    assert (await store.counts()).active == 1 + len(others)


async def test_an_entry_at_the_wrong_deadline_is_moved(
    store: SessionStore, redis: RedisClient
) -> None:
    """An entry far in the future would keep an idle session alive in the counts."""
    made = await store.create()
    await put_entry(redis, store, made.id, 9_999_999_999_999)
    report = await repair_store(store)
    assert (report.expiry_moved, report.fixed) == (1, 1)
    assert await entry(redis, store, made.id) == made.expires_at.timestamp() * 1000


async def test_an_entry_of_an_ended_id_is_dropped(store: SessionStore, redis: RedisClient) -> None:
    """A closed session's id put back in the index (by hand) is not counted as live."""
    made = await store.create()
    await store.delete(made.id)
    await put_entry(redis, store, made.id, 9_999_999_999_999)
    assert (await store.counts()).active == 1

    report = await repair_store(store)

    assert (report.expiry_removed, report.fixed) == (1, 1)
    assert (await store.counts()).active == 0
    tomb = await store.lookup(made.id)
    assert isinstance(tomb, Tombstone) and tomb.status is SessionStatus.CLOSED


async def test_a_lost_record_is_ended_with_its_event(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record evicted or deleted by hand: expired as 'lost', tombstone and event."""
    made = await store.create(user_id="liz")
    await redis.delete(store.session_keys(made.id).record)

    report = await repair_store(store)

    assert (report.lost_expired, report.user_index_removed) == (1, 1)
    tomb = await store.lookup(made.id)
    assert isinstance(tomb, Tombstone) and tomb.reason == "lost"
    counts = await store.counts()
    assert (counts.active, counts.totals["expired"]) == (0, 1)
    expired = [e for e in await all_events(redis, store) if e.kind == "expired"]
    assert [(e.session_id, e.fields["reason"]) for e in expired] == [(made.id, "lost")]


async def test_user_index_missing_and_stale_entries_are_fixed(
    store: SessionStore, redis: RedisClient
) -> None:
    """A rotation that crashed before its index update: new id missing, old id stale."""
    kept = await store.create(user_id="max")
    rotated_away = await store.create(user_id="max")
    index = store.keys.user_index("max")
    # The rotate script ran, the user-index update after it did not:
    new = await store.rotate(rotated_away.id)
    await redis.hset(index, "max", f"{kept.id} {rotated_away.id} not-a-session-id")

    report = await repair_store(store)

    assert (report.user_index_added, report.user_index_removed) == (1, 2)
    assert await redis.hget(index, "max") == f"{kept.id} {new.id}", "kept in place, new last"
    assert {s.id for s in await store.list_for_user("max")} == {kept.id, new.id}
    assert await redis.pttl(index) == -1, "entries leave with their sessions, not by a TTL"


async def test_a_second_run_finds_nothing_to_fix(store: SessionStore, redis: RedisClient) -> None:
    """Repair is idempotent: after one run, the next reports zero fixes."""
    made = await store.create(user_id="ned")
    await drop_entry(redis, store, made.id)
    await redis.hdel(store.keys.user_index("ned"), "ned")
    first = await repair_store(store)
    second = await repair_store(store)
    assert (first.expiry_added, first.user_index_added) == (1, 1)
    assert second.fixed == 0 and second.records_scanned == 1


async def test_a_run_out_of_time_continues_from_its_cursor(
    store: SessionStore, redis: RedisClient
) -> None:
    """A zero budget stops after each page; following the cursors repairs everything."""
    ids = await create_many(store, 30, user_id="oli")
    for session_id in ids[:10]:
        await drop_entry(redis, store, session_id)
    await redis.hdel(store.keys.user_index("oli"), "oli")
    ticks = itertools.count()

    total_added = total_user_added = runs = 0
    cursor: str | None = None
    while True:
        report = await repair_store(
            store, cursor=cursor, batch=4, time_budget=timedelta(0), clock=lambda: next(ticks)
        )
        runs += 1
        total_added += report.expiry_added
        total_user_added += report.user_index_added
        cursor = report.next_cursor
        if cursor is None:
            break
    assert runs > store.keys.shards, "each run stopped early and left a cursor"
    assert total_added == 10
    assert total_user_added == 30
    assert (await store.counts()).active == 30


@pytest.mark.parametrize("cursor", ["x", "99/", "0/records:x", "0/other:1", "4/a:b"])
async def test_a_malformed_cursor_is_refused(store: SessionStore, cursor: str) -> None:
    with pytest.raises(InvalidInput):
        await repair_store(store, cursor=cursor)
