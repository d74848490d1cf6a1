"""The user index's layout: a fixed set of hashes shared by users, one field per user."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from sessionstore import InvalidInput, SessionStore, Tombstone, repair_store, sweep_store
from sessionstore._keys import USER_INDEX_HASHES, user_index_hash
from sessionstore._redis import is_cluster
from sessionstore.store._users import indexed_ids
from tests.conftest import RoundTrips
from tests.polling import eventually

DUE = timedelta(milliseconds=1)


def _same_hash_as(user_id: str) -> str:
    """Another user id whose entry sits in the same hash as `user_id`'s."""
    wanted = user_index_hash(user_id)
    return next(f"u{n}" for n in range(100_000) if user_index_hash(f"u{n}") == wanted)


def test_a_users_hash_is_fixed_by_the_user_id() -> None:
    """The hash is the CRC-32 of the id modulo a fixed count: the same in every process
    and release (a change would strand every entry until the repair job moved it)."""
    assert USER_INDEX_HASHES == 1024
    assert user_index_hash("alice") == 71
    assert {user_index_hash(f"user{n}") for n in range(20_000)} == set(range(1024))


async def test_users_of_one_hash_share_it_and_each_keeps_its_own_ids(
    store: SessionStore,
) -> None:
    """Two users of one hash are two fields of one key; a user's value lists its ids
    oldest first; the field goes with the user's last session, the key with the last
    field."""
    other = _same_hash_as("ada")
    key = store.keys.user_index("ada")
    assert store.keys.user_index(other) == key
    first = await store.create(user_id="ada")
    second = await store.create(user_id="ada")
    theirs = await store.create(user_id=other)
    assert await store.redis.hgetall(key) == {
        "ada": f"{first.id} {second.id}",
        other: theirs.id,
    }
    assert await store.redis.object("encoding", key) == "listpack", "small hashes stay compact"
    await store.delete(first.id)
    await store.delete(second.id)
    assert await store.redis.hgetall(key) == {other: theirs.id}
    await store.expire(theirs.id)
    assert await store.redis.exists(key) == 0


async def test_a_rotated_id_keeps_its_place_and_a_resumed_one_goes_last(
    store: SessionStore,
) -> None:
    """Rotation keeps the session's deadline, so its new id stays where the old one was;
    a resumed session starts a new lifetime and goes last."""
    first = await store.create(user_id="bo")
    second = await store.create(user_id="bo")
    rotated = await store.rotate(first.id)
    assert await indexed_ids(store.context, "bo") == [rotated.id, second.id]
    await store.expire(rotated.id)
    resumed = await store.resume(rotated.id)
    assert await indexed_ids(store.context, "bo") == [second.id, resumed.id]
    listed = await store.list_for_user("bo")
    assert [s.id for s in listed] == [second.id, resumed.id], "oldest deadline first"


async def test_the_listing_is_ordered_by_deadline_within_what_it_reads(
    store: SessionStore,
) -> None:
    """A later session with a shorter lifetime is listed before an earlier one."""
    long = await store.create(user_id="cy")
    short = await store.create(user_id="cy", absolute_lifetime=timedelta(hours=1))
    assert [s.id for s in await store.list_for_user("cy")] == [short.id, long.id]


async def test_a_reader_drops_ended_and_malformed_ids(store: SessionStore) -> None:
    """Ids of ended sessions and ids this store never issues (written by hand) are
    dropped by the listing that meets them; the live ones stay in their order."""
    live = await store.create(user_id="di")
    ended = await store.create(user_id="di")
    key = store.keys.user_index("di")
    await store.redis.hset(key, "di", f"{ended.id} junk {live.id}")
    await store.redis.delete(store.keys.session(ended.id).record)
    assert [s.id for s in await store.list_for_user("di")] == [live.id]
    assert await store.redis.hget(key, "di") == live.id


async def test_a_listing_reads_at_most_limit_ids_per_page(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """With all ids live, a listing is two round trips (the entry, then one pipelined
    page of reads) and reads only `limit` of the user's sessions; on a cluster the page
    is one write to each node that holds one of them."""
    made = [await store.create(user_id="ed") for _ in range(5)]
    await store.list_for_user("ed")  # loads the scripts and connects to every node used
    round_trips.reset()
    listed = await store.list_for_user("ed", limit=2)
    assert [s.id for s in listed] == [made[0].id, made[1].id]
    if not is_cluster(store.redis):
        assert round_trips.total == 2
        return
    cluster: Any = store.redis
    entry = cluster.get_node_from_key(store.keys.user_index("ed")).name
    pages = {cluster.get_node_from_key(store.keys.session(s.id).record).name for s in listed}
    assert round_trips.by_node == Counter([entry, *pages])


@pytest.mark.parametrize("bad", ["", "has space", "a" * 257, "x\r\nFLUSHALL"])
async def test_bad_user_ids_are_refused_before_redis(
    store: SessionStore, round_trips: RoundTrips, bad: str
) -> None:
    """A malformed user id gets InvalidInput from create and from the listing, and
    nothing reaches Redis."""
    round_trips.reset()
    with pytest.raises(InvalidInput, match="user_id"):
        await store.create(user_id=bad)
    with pytest.raises(InvalidInput, match="user_id"):
        await store.list_for_user(bad)
    with pytest.raises(InvalidInput, match="user_id"):
        await store.list_for_user(bad, limit=0)
    assert round_trips.total == 0


async def test_the_sweep_drops_the_entries_of_the_sessions_it_expired(
    store: SessionStore,
) -> None:
    """An idle session expired by the sweep leaves its user's entry at once, so the
    entries of a user who never comes back do not wait for the repair job."""
    kept = await store.create(user_id="fay")
    idle = await store.create(user_id="fay", idle_timeout=DUE)
    await store.create(user_id="gil", idle_timeout=DUE)
    await store.create(idle_timeout=DUE)  # no user: nothing to drop

    async def all_overdue() -> bool:
        return (await store.counts()).overdue == 3

    await eventually(all_overdue)
    assert (await sweep_store(store)).expired == 3
    assert await indexed_ids(store.context, "fay") == [kept.id]
    assert idle.id not in await indexed_ids(store.context, "fay")
    assert await store.redis.hexists(store.keys.user_index("gil"), "gil") == 0


async def test_a_user_with_more_ids_than_fit_its_field_gets_a_sorted_set_of_its_own(
    store: SessionStore,
) -> None:
    """Past two ids the field holds ``*`` and the ids move, in order, to the user's own
    sorted set (so the shared hash keeps compact values and no call copies a long one);
    rotate keeps an id's place there; with two left they go back to the field."""
    key, own = store.keys.user_index_keys("hal")
    made = [await store.create(user_id="hal") for _ in range(2)]
    assert await store.redis.hget(key, "hal") == f"{made[0].id} {made[1].id}"
    made += [await store.create(user_id="hal") for _ in range(3)]
    assert await store.redis.hget(key, "hal") == "*"
    assert await store.redis.object("encoding", key) == "listpack"
    assert await store.redis.zrange(own, 0, -1) == [s.id for s in made]
    rotated = await store.rotate(made[1].id)
    order = [made[0].id, rotated.id, *(s.id for s in made[2:])]
    assert await indexed_ids(store.context, "hal") == order
    assert [s.id for s in await store.list_for_user("hal", limit=3)] == order[:3]
    await store.delete(made[0].id)
    await store.expire(made[2].id)
    assert await indexed_ids(store.context, "hal") == [rotated.id, made[3].id, made[4].id]
    await store.delete(made[3].id)
    assert await store.redis.hget(key, "hal") == f"{rotated.id} {made[4].id}"
    assert await store.redis.exists(own) == 0


async def test_the_repair_job_prunes_a_users_own_set_and_junk_fields(
    store: SessionStore,
) -> None:
    """Repair reads the ids of a user's own sorted set too, drops those whose record is
    gone, and drops a field that names no user id."""
    key, own = store.keys.user_index_keys("ivy")
    made = [await store.create(user_id="ivy") for _ in range(4)]
    for session in made[:2]:
        await store.redis.delete(store.keys.session(session.id).record)
    await store.redis.hset(key, "not a user", made[3].id)
    report = await repair_store(store)
    assert report.user_index_removed == 3
    assert await indexed_ids(store.context, "ivy") == [made[2].id, made[3].id]
    assert await store.redis.hexists(key, "not a user") == 0
    assert await store.redis.exists(own) == 0, "back in the field with two left"


async def test_a_record_whose_user_id_was_written_by_hand_is_still_swept(
    store: SessionStore,
) -> None:
    """The sweep expires a session whose record names a malformed user id (written by
    hand) like any other: no entry can name that user, so there is nothing to drop."""
    made = await store.create(user_id="jo", idle_timeout=DUE)
    await store.redis.hset(store.keys.session(made.id).record, "user_id", "not a user")

    async def overdue() -> bool:
        return (await store.counts()).overdue == 1

    await eventually(overdue)
    assert (await sweep_store(store)).expired == 1
    assert isinstance(await store.lookup(made.id), Tombstone)
