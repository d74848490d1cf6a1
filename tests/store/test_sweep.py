"""Whole-store sweeps (`sweep_store`) on a real Redis, standalone and Cluster."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from sessionstore import (
    InvalidInput,
    RedisClient,
    SessionExpired,
    SessionSettings,
    SessionStatus,
    SessionStore,
    Tombstone,
    repair_store,
    sweep_store,
)
from sessionstore.store import list_by_status
from tests.bulk import (
    all_events,
    backdate,
    create_many,
    expired_per_session,
    write_with_long_names,
)
from tests.expiry_index import entry, put_entry
from tests.polling import eventually, until_raises
from tests.store.lease_fields import lease_deadline

DUE = timedelta(milliseconds=1)


async def _all_overdue(store: SessionStore, count: int) -> None:
    async def check() -> bool:
        return (await store.counts()).overdue == count

    await eventually(check, timeout=10)


async def test_sweep_expires_exactly_the_due_sessions(store: SessionStore) -> None:
    """Due sessions get a tombstone, a counter and one event each; live ones are untouched."""
    due = await create_many(store, 40, idle_timeout=DUE)
    live = await create_many(store, 25)
    await _all_overdue(store, 40)

    report = await sweep_store(store, batch=7)

    assert (report.expired, report.lost, report.still_due, report.stopped) == (40, 0, 0, "done")
    counts = await store.counts()
    assert (counts.active, counts.overdue, counts.totals["expired"]) == (25, 0, 40)
    assert expired_per_session(await all_events(store.redis, store)) == dict.fromkeys(due, 1)
    tomb = await store.lookup(due[0])
    assert isinstance(tomb, Tombstone) and tomb.reason == "idle"
    assert (await store.get(live[0])).status is SessionStatus.ACTIVE


async def test_nothing_due_costs_one_round(store: SessionStore) -> None:
    """With only live sessions a run is one round of scripts and changes nothing."""
    await create_many(store, 30)
    report = await sweep_store(store)
    assert (report.rounds, report.handled, report.stopped) == (1, 0, "done")
    assert (await store.counts()).active == 30


async def test_budget_stops_a_run_and_the_next_run_catches_up(store: SessionStore) -> None:
    """A run handles at most max_sessions; later runs take the rest, oldest first."""
    due = await create_many(store, 50, idle_timeout=DUE)
    await _all_overdue(store, 50)

    first = await sweep_store(store, batch=4, max_sessions=20)
    assert (first.expired, first.stopped, first.still_due) == (20, "max_sessions", 30)
    second = await sweep_store(store, batch=4, max_sessions=20)
    third = await sweep_store(store, batch=4, max_sessions=20)
    assert (second.expired, third.expired, third.stopped) == (20, 10, "done")
    assert expired_per_session(await all_events(store.redis, store)) == dict.fromkeys(due, 1)


async def test_a_small_budget_still_reaches_the_last_shard(store: SessionStore) -> None:
    """A budget below one round of all shards: empty shards are skipped, unvisited ones counted."""
    last = store.keys.shards - 1
    due = await create_many(store, 12, idle_timeout=DUE, shard=last)
    await _all_overdue(store, 12)
    report = await sweep_store(store, batch=5, max_sessions=5)
    assert (report.expired, report.still_due, report.stopped) == (5, 7, "max_sessions")
    assert len(expired_per_session(await all_events(store.redis, store))) == 5
    assert set(expired_per_session(await all_events(store.redis, store))) <= set(due)
    # The other way round: the budget is spent on shard 0 before the due shard is visited.
    first = await create_many(store, 5, idle_timeout=DUE, shard=0)
    await _all_overdue(store, 12)
    early = await sweep_store(store, batch=5, max_sessions=5)
    assert (early.expired, early.still_due) == (5, 7), "the unvisited shard is still counted"
    assert set(first) <= set(expired_per_session(await all_events(store.redis, store)))


async def test_time_budget_ends_a_run_after_the_current_round(store: SessionStore) -> None:
    """With the injected clock past the budget after one round, the run stops there."""
    await create_many(store, 30, idle_timeout=DUE)
    await _all_overdue(store, 30)
    ticks = itertools.count(0, 10)  # every reading of the clock is 10 s later

    report = await sweep_store(
        store, batch=2, time_budget=timedelta(seconds=5), clock=lambda: next(ticks)
    )

    assert (report.rounds, report.stopped) == (1, "time_budget")
    assert report.expired <= 2 * store.keys.shards
    assert report.still_due == 30 - report.expired


async def test_long_overdue_pass_takes_only_sessions_due_long_ago(store: SessionStore) -> None:
    """min_overdue: the aggressive start-up pass leaves recently due sessions alone."""
    old = await create_many(store, 6, idle_timeout=DUE)
    recent = await create_many(store, 5, idle_timeout=DUE)
    await _all_overdue(store, 11)
    await backdate(store, old, timedelta(hours=2))

    report = await sweep_store(store, min_overdue=timedelta(hours=1))

    assert (report.expired, report.still_due) == (6, 0)
    assert (await store.counts()).overdue == 5
    for session_id in recent:
        with pytest.raises(SessionExpired):  # overdue, but not swept yet
            await store.get(session_id)
        assert not isinstance(await store.lookup(session_id), Tombstone)


async def test_concurrent_sweepers_never_expire_a_session_twice(store: SessionStore) -> None:
    """Three sweeps at once on the same shards: every due session expired exactly once."""
    due = await create_many(store, 300, idle_timeout=DUE)
    await create_many(store, 100)
    await _all_overdue(store, 300)

    reports = await asyncio.gather(*(sweep_store(store, batch=5) for _ in range(3)))

    assert sum(r.expired for r in reports) == 300
    assert expired_per_session(await all_events(store.redis, store)) == dict.fromkeys(due, 1)
    assert (await store.counts()).totals["expired"] == 300


async def test_lagging_and_ended_index_entries_are_put_right(
    store: SessionStore, redis: RedisClient
) -> None:
    """An entry due before its active record is moved; one of an ended id is dropped."""
    active = await store.create()
    ended = await store.create()
    await store.delete(ended.id)
    await put_entry(redis, store, active.id, 1)
    await put_entry(redis, store, ended.id, 1)

    report = await sweep_store(store)

    assert (report.rescheduled, report.removed, report.expired) == (1, 1, 0)
    assert await entry(redis, store, active.id) == active.expires_at.timestamp() * 1000
    assert await entry(redis, store, ended.id) is None
    assert (await store.get(active.id)).status is SessionStatus.ACTIVE


async def test_a_lost_record_is_still_expired_and_announced(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record Redis dropped (after the sweep grace) still gets a tombstone and event."""
    made = await store.create(user_id="lou", idle_timeout=DUE)
    await _all_overdue(store, 1)
    await redis.delete(store.session_keys(made.id).record)

    report = await sweep_store(store)

    assert (report.expired, report.lost) == (1, 1)
    tomb = await store.lookup(made.id)
    assert isinstance(tomb, Tombstone) and tomb.reason == "lost"
    expired = [e for e in await all_events(redis, store) if e.kind == "expired"]
    assert [(e.session_id, e.fields["reason"]) for e in expired] == [(made.id, "lost")]


async def test_a_record_with_the_long_field_names_is_swept_as_lost(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record of an earlier build (long field names, not read) is ended as `lost`
    when its expiry entry comes due: its keys dropped, a tombstone and an event."""
    made = await store.create(user_id="lou", state={"n": 1})
    keys = store.session_keys(made.id)
    await write_with_long_names(redis, keys.record)
    await put_entry(redis, store, made.id, 1)

    report = await sweep_store(store)

    assert (report.expired, report.lost) == (1, 1)
    assert not await redis.exists(keys.record)
    tomb = await store.lookup(made.id)
    assert isinstance(tomb, Tombstone) and tomb.reason == "lost"
    expired = [e for e in await all_events(redis, store) if e.kind == "expired"]
    assert [(e.session_id, e.fields["reason"]) for e in expired] == [(made.id, "lost")]


async def test_an_expired_session_leaves_no_lease_or_lock_behind(
    store: SessionStore, redis: RedisClient
) -> None:
    """Leases still held (fields of the record) and a lock still granted when the
    session comes due go with it; a session that never had them expires all the same
    (its keys are not looked up)."""
    held = await store.create()
    plain = await store.create()
    keys = store.session_keys(held.id)
    async with store.track_request(held.id) as request, store.track_connection(held.id) as conn:
        await store.lock(held.id).acquire()
        for lease in (request, conn):
            assert await lease_deadline(redis, keys.record, lease) is not None
        assert await redis.exists(keys.lock) == 1
        await backdate(store, [held.id, plain.id], timedelta(seconds=1))

        report = await sweep_store(store)

        assert (report.expired, report.lost) == (2, 0)
        assert await redis.exists(keys.lock, keys.record) == 0
    for made in (held, plain):
        tomb = await store.lookup(made.id)
        assert isinstance(tomb, Tombstone) and tomb.reason == "idle"


async def test_bad_arguments_are_refused(store: SessionStore) -> None:
    """A zero batch or budget is refused before anything is swept."""
    for kwargs in ({"batch": 0}, {"max_sessions": 0}, {"min_overdue": timedelta(seconds=-1)}):
        with pytest.raises(InvalidInput):
            await sweep_store(store, **kwargs)  # type: ignore[arg-type]


async def test_single_shard_sweep_keeps_its_old_signature(
    redis: RedisClient, session_settings: SessionSettings
) -> None:
    """SessionStore.sweep_shard (the core's one-batch call) still sweeps one shard."""
    store = SessionStore(redis, session_settings.model_copy(update={"shards": 1}))
    await create_many(store, 3, idle_timeout=DUE)
    await _all_overdue(store, 3)
    result = await store.sweep_shard(0, batch=2)
    assert (result.expired, result.still_due) == (2, 1)


async def test_a_slide_leaves_the_index_entry_where_it_was_written(
    store: SessionStore, redis: RedisClient
) -> None:
    """Touches, state writes and leases move the record's deadline but not its index
    entry, which stays at the deadline create wrote (never later than the record's);
    the record's TTL stays at its absolute deadline plus the sweep grace, and repair
    finds nothing to move."""
    made = await store.create()
    keys = store.session_keys(made.id)
    written = made.expires_at.timestamp() * 1000
    grace = round(store.settings.sweep_grace.total_seconds() * 1000)
    absolute = int(await redis.hget(keys.record, "life_end"))
    for _ in range(3):
        await store.touch(made.id)
        await store.set_state(made.id, {"n": 1})
        async with store.track_request(made.id):
            pass
        deadline = (await store.get(made.id)).expires_at.timestamp() * 1000
        assert await entry(redis, store, made.id) == written <= deadline
        assert await redis.execute_command("PEXPIRETIME", keys.record) == absolute + grace
    assert (await repair_store(store)).expiry_moved == 0


async def test_an_entry_a_slide_left_behind_is_moved_by_the_next_sweep(
    store: SessionStore, redis: RedisClient
) -> None:
    """A session whose entry came due while it stayed active is listed as active, counted
    as overdue until a sweep pass reads its record and puts the entry at its deadline,
    and is not expired; the record's TTL does not move."""
    made = await store.create()
    keys = store.session_keys(made.id)
    seconds, _ = await redis.time()
    await put_entry(redis, store, made.id, (int(seconds) - 1) * 1000)  # written long ago
    expires = await redis.execute_command("PEXPIRETIME", keys.record)
    deadline = (await store.touch(made.id)).timestamp() * 1000
    assert await entry(redis, store, made.id) < deadline
    assert (await store.counts()).overdue == 1
    assert [s.id for s in await list_by_status(store, SessionStatus.ACTIVE)] == [made.id]

    report = await sweep_store(store)

    assert (report.rescheduled, report.expired) == (1, 0)
    assert await entry(redis, store, made.id) == deadline
    counts = await store.counts()
    assert (counts.active, counts.overdue) == (1, 0)
    assert (await store.get(made.id)).status is SessionStatus.ACTIVE
    assert await redis.execute_command("PEXPIRETIME", keys.record) == expires


async def test_the_record_ttl_is_set_once_from_the_absolute_deadline(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record expires in Redis at its absolute deadline plus the sweep grace, from its
    creation on: touches, state writes, leases taken and returned, a rotate (the new id)
    and a resume of an active session leave that expiry as it was, and a resumed
    session's new record gets its own."""
    grace = round(store.settings.sweep_grace.total_seconds() * 1000)

    async def expiry_of(session_id: str) -> tuple[int, int]:
        record = store.session_keys(session_id).record
        absolute = int(await redis.hget(record, "life_end"))
        return await redis.execute_command("PEXPIRETIME", record), absolute + grace

    made = await store.create(user_id="bob", state={"n": 1})
    ttl, wanted = await expiry_of(made.id)
    assert ttl == wanted
    await store.touch(made.id)
    await store.set_state(made.id, {"n": 2})
    async with store.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None
        lease.draft["n"] = 3
    async with store.track_request(made.id):
        pass
    await store.resume(made.id)
    assert await expiry_of(made.id) == (wanted, wanted)
    rotated = await store.rotate(made.id)
    assert await expiry_of(rotated.id) == (wanted, wanted)

    short = await store.create(idle_timeout=DUE)

    await until_raises(lambda: store.get(short.id), SessionExpired)
    resumed = await store.resume(short.id)
    assert resumed.id != short.id
    ttl, wanted = await expiry_of(resumed.id)
    assert ttl == wanted
