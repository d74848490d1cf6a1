"""Session events: every committed transition emits its event; followers and
consumer groups read them on standalone Redis and on Redis Cluster."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from sessionstore import (
    Event,
    EventConsumer,
    EventFollower,
    EventKind,
    InvalidInput,
    RedisClient,
    SessionGone,
    SessionStore,
    sweep_store,
)
from tests.bulk import all_events, create_many, kinds_per_session
from tests.polling import eventually

DUE = timedelta(milliseconds=1)
FAST = timedelta(milliseconds=20)


async def _read_until(reader: EventFollower | EventConsumer, count: int) -> list[Event]:
    """Read until `count` events arrived (polling with a deadline)."""
    got: list[Event] = []

    async def enough() -> bool:
        got.extend(await reader.read())
        return len(got) >= count

    await eventually(enough, timeout=10)
    return got


async def _overdue(store: SessionStore, session_id: str) -> None:
    async def check() -> bool:
        try:
            await store.get(session_id)
        except SessionGone:
            return True
        return False

    await eventually(check, timeout=5)


async def test_every_transition_emits_exactly_its_event(store: SessionStore) -> None:
    """created, deleted, expired (sweep and resume), rotated, resumed: one event each."""
    created = await store.create(user_id="ann")
    deleted = await store.create()
    await store.delete(deleted.id)
    swept = await store.create(idle_timeout=DUE)
    await _overdue(store, swept.id)
    await sweep_store(store)
    rotated_from = await store.create(user_id="ann")
    rotated = await store.rotate(rotated_from.id)
    old = await store.create(user_id="ann", idle_timeout=DUE)
    await _overdue(store, old.id)
    successor = await store.resume(old.id)  # the overdue record is expired by resume itself

    events = await all_events(store.redis, store)
    kinds = kinds_per_session(events)
    assert kinds[created.id] == {"created": 1}
    assert kinds[deleted.id] == {"created": 1, "deleted": 1}
    assert kinds[swept.id] == {"created": 1, "expired": 1}
    assert kinds[rotated_from.id] == {"created": 1, "rotated": 1}
    assert kinds[old.id] == {"created": 1, "expired": 1}
    assert kinds[successor.id] == {"resumed": 1}
    by_kind = {(e.kind, e.session_id): e for e in events}
    assert by_kind[("rotated", rotated_from.id)].fields["new_session_id"] == rotated.id
    assert by_kind[("resumed", successor.id)].fields["resumed_from"] == old.id
    assert by_kind[("created", created.id)].fields["user_id"] == "ann"
    assert by_kind[("expired", swept.id)].fields["reason"] == "idle"
    assert len({e.id for e in events}) == len(events), "event ids are unique"


async def test_events_always_match_the_committed_counters(store: SessionStore) -> None:
    """After a random mix of transitions, the events of each shard add up to its
    counters, which the same scripts bump: no committed transition lacks its event."""
    rng = random.Random(7)
    live: list[str] = []
    for _ in range(150):
        action = rng.choice(["create", "create", "delete", "expire", "rotate", "resume", "sweep"])
        if action == "create" or not live:
            live.append((await store.create(idle_timeout=rng.choice([DUE, None]))).id)  # type: ignore[arg-type]
            continue
        victim = rng.choice(live)
        try:
            if action == "delete":
                await store.delete(victim)
            elif action == "expire":
                await store.expire(victim)
            elif action == "rotate":
                live.append((await store.rotate(victim)).id)
            elif action == "resume":
                live.append((await store.resume(victim)).id)
            else:
                await sweep_store(store)
        except SessionGone:
            pass  # the dice picked an id that had ended: a refused call emits nothing

    per_shard: dict[int, Counter[str]] = {}
    for event in await all_events(store.redis, store):
        per_shard.setdefault(event.shard, Counter())[event.kind] += 1
    counts = await store.counts()
    for shard in counts.shards:
        events = per_shard.get(shard.shard, Counter())
        assert events["created"] + events["resumed"] == shard.totals["created"]
        assert events["resumed"] == shard.totals["resumed"]
        assert events["expired"] == shard.totals["expired"]
        assert events["deleted"] == shard.totals["closed"]
        assert events["rotated"] == shard.totals["rotated"]


async def test_follower_from_now_sees_only_new_events(store: SessionStore) -> None:
    """after="$" starts at the streams' ends at the first read."""
    await create_many(store, 5)
    follower = EventFollower(store.redis, store.settings, block=FAST)
    assert await follower.read() == []
    made = await store.create()
    events = await _read_until(follower, 1)
    assert [(e.kind, e.session_id) for e in events] == [(EventKind.CREATED, made.id)]


async def test_follower_from_the_start_reads_everything_in_time_order(
    store: SessionStore,
) -> None:
    """after="0" reads every kept event, across shards, ordered by time."""
    ids = await create_many(store, 30)
    follower = EventFollower(store.redis, store.settings, after="0", count=7, block=FAST)
    events = await _read_until(follower, 30)
    assert sorted(e.session_id for e in events) == sorted(ids)
    assert all(e.kind == "created" for e in events)


async def test_follower_continues_from_an_event_id_or_a_cursor(store: SessionStore) -> None:
    """Following on from an event id or a saved cursor loses nothing that came after."""
    first = await create_many(store, 10)
    follower = EventFollower(store.redis, store.settings, after="0", block=FAST)
    seen = await _read_until(follower, 10)
    cursor = follower.cursor
    later = await create_many(store, 10)

    from_cursor = await _read_until(
        EventFollower(store.redis, store.settings, after=cursor, block=FAST), 10
    )
    assert {e.session_id for e in from_cursor} == set(later)

    last = max(seen, key=lambda e: (e.at, e.entry_id))
    resumed = EventFollower(store.redis, store.settings, after=last.id, block=FAST)
    again = {e.session_id for e in await _read_until(resumed, 10)}
    assert set(later) <= again, "nothing after the event is lost"
    assert last.session_id not in again, "the event itself is not read again"
    assert again <= set(first) | set(later)


@pytest.mark.parametrize("after", ["nonsense", "99:1-0", "1:abc", {0: "x"}, {9: "1-0"}], ids=str)
def test_bad_positions_are_refused(store: SessionStore, after: object) -> None:
    """Malformed event ids and cursors are refused before anything is read."""
    with pytest.raises(InvalidInput):
        EventFollower(store.redis, store.settings, after=after)  # type: ignore[arg-type]


async def test_a_group_shares_the_events_between_its_consumers(store: SessionStore) -> None:
    """Two consumers of one group: every event goes to exactly one of them; ack clears it."""
    one = EventConsumer(store.redis, store.settings, group="g", consumer="a", block=FAST)
    two = EventConsumer(store.redis, store.settings, group="g", consumer="b", block=FAST)
    await one.setup()
    ids = await create_many(store, 40)

    got_one: list[Event] = []
    got_two: list[Event] = []

    async def all_delivered() -> bool:
        got_one.extend(await one.read())
        got_two.extend(await two.read())
        return len(got_one) + len(got_two) >= 40

    await eventually(all_delivered, timeout=10)
    assert {e.id for e in got_one}.isdisjoint({e.id for e in got_two})
    assert sorted(e.session_id for e in got_one + got_two) == sorted(ids)
    assert await one.ack(*got_one) == len(got_one)
    assert await two.ack(*got_two) == len(got_two)
    assert await one.ack(*got_one) == 0, "acknowledged events are no longer pending"
    for shard in range(store.keys.shards):
        pending = await store.redis.xpending(store.keys.events(shard), "g")
        assert pending["pending"] == 0


async def test_events_of_a_dead_consumer_are_claimed_by_another(store: SessionStore) -> None:
    """Read but never acknowledged (the reader died): another consumer gets the same events."""
    dead = EventConsumer(store.redis, store.settings, group="g", consumer="dead", block=FAST)
    await dead.setup()
    ids = await create_many(store, 12)
    taken = await _read_until(dead, 12)

    heir = EventConsumer(
        store.redis,
        store.settings,
        group="g",
        consumer="heir",
        block=FAST,
        claim_idle=timedelta(milliseconds=50),
    )
    # At least once: an event the heir claimed and has not acknowledged yet is idle
    # again after `claim_idle` and may be claimed again by its next read (a slow one).
    claimed: dict[str, Event] = {}

    async def all_claimed() -> bool:
        claimed.update((e.id, e) for e in await heir.read())
        return len(claimed) >= 12

    await eventually(all_claimed, timeout=10)
    assert set(claimed) == {e.id for e in taken}
    assert sorted(e.session_id for e in claimed.values()) == sorted(ids)
    assert await heir.ack(*claimed.values()) == 12


async def test_a_restarted_consumer_gets_its_own_pending_events_first(
    store: SessionStore,
) -> None:
    """Same consumer name after a crash: what it had not acknowledged comes back."""
    before = EventConsumer(store.redis, store.settings, group="g", consumer="c", block=FAST)
    await before.setup()
    await create_many(store, 8)
    taken = await _read_until(before, 8)
    await before.ack(*taken[:3])

    after = EventConsumer(store.redis, store.settings, group="g", consumer="c", block=FAST)
    again = await after.read()
    assert {e.id for e in again} == {e.id for e in taken[3:]}


async def test_a_new_group_can_start_from_the_beginning(store: SessionStore) -> None:
    """start="0": a group created late still gets the events already kept."""
    ids = await create_many(store, 6)
    late = EventConsumer(
        store.redis, store.settings, group="late", consumer="x", start="0", block=FAST
    )
    assert sorted(e.session_id for e in await _read_until(late, 6)) == sorted(ids)


async def test_streams_stay_bounded(redis: RedisClient, store: SessionStore) -> None:
    """Each shard's stream is capped near events_maxlen (approximate trimming)."""
    small = SessionStore(redis, store.settings.model_copy(update={"events_maxlen": 10}))
    await create_many(small, 1200)
    for shard in range(small.keys.shards):
        assert await redis.xlen(small.keys.events(shard)) <= 10 + 100  # one radix node
