"""Store edges found under fault and abuse trials, each pinned on standalone and Cluster."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from sessionstore import (
    InvalidInput,
    LockNotOwned,
    PayloadTooLarge,
    RedisClient,
    SessionNotFound,
    SessionSettings,
    SessionStore,
)
from sessionstore.store import StoreContext
from sessionstore.store._users import indexed_ids, list_sessions
from tests.bulk import write_with_long_names


async def test_a_repeated_delete_name_is_subtracted_once(
    store: SessionStore, session_settings: SessionSettings
) -> None:
    """Deleting one attribute named five times leaves the counts right, so limits still hold."""
    settings = session_settings.model_copy(update={"max_attributes": 3, "max_state_bytes": 100})
    small = SessionStore(store.redis, settings)
    made = await small.create(state={"a": 1, "b": 2})
    await small.set_state(made.id, delete=["a", "a", "a", "a", "a"])
    fields = await store.redis.hmget(store.keys.session(made.id).record, "attrs", "attr_bytes")
    assert fields == ["1", "1"], "one attribute of one byte is left"
    await small.set_state(made.id, {"c": 3, "d": 4})
    with pytest.raises(PayloadTooLarge):
        await small.set_state(made.id, {"e": 5})
    assert set((await small.get(made.id)).state) == {"b", "c", "d"}


async def test_state_totals_are_left_out_while_no_attribute_is_held(
    store: SessionStore, session_settings: SessionSettings
) -> None:
    """A session without state stores no state_count / state_bytes; they come with the
    first attribute, go with the last one deleted (by a state write or a lease's draft
    commit), and the limits hold all along."""
    settings = session_settings.model_copy(update={"max_attributes": 2, "max_state_bytes": 100})
    small = SessionStore(store.redis, settings)
    made = await small.create(user_id="ida")
    key = store.keys.session(made.id).record
    totals = ("attrs", "attr_bytes")
    assert await store.redis.hmget(key, *totals) == [None, None]
    await small.set_state(made.id, metadata={"m": 1}, delete=["absent"])
    assert await store.redis.hmget(key, *totals) == [None, None]
    await small.set_state(made.id, {"a": 1, "b": 22})
    assert await store.redis.hmget(key, *totals) == ["2", "3"]
    await small.set_state(made.id, {"a": 2})  # the same size: the totals stay
    assert await store.redis.hmget(key, *totals) == ["2", "3"]
    await small.set_state(made.id, {"a": 10})
    assert await store.redis.hmget(key, *totals) == ["2", "4"]
    with pytest.raises(PayloadTooLarge):
        await small.set_state(made.id, {"c": 3})
    await small.set_state(made.id, delete=["a", "b"])
    assert await store.redis.hmget(key, *totals) == [None, None]
    async with small.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None
        lease.draft["x"] = "y" * 90
    assert await store.redis.hmget(key, *totals) == ["1", "92"]
    with pytest.raises(PayloadTooLarge):
        await small.set_state(made.id, {"z": "z" * 9})
    async with small.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None
        del lease.draft["x"]
    assert await store.redis.hmget(key, *totals) == [None, None]
    got = await small.get(made.id)
    assert (got.state, got.metadata, got.version) == ({}, {"m": 1}, 8)


async def test_a_record_with_state_totals_at_zero_is_written_as_before(
    store: SessionStore, session_settings: SessionSettings
) -> None:
    """A record holding state_count / state_bytes at 0 (as earlier builds wrote every
    record without state) counts from there."""
    settings = session_settings.model_copy(update={"max_attributes": 1})
    small = SessionStore(store.redis, settings)
    made = await small.create()
    key = store.keys.session(made.id).record
    await store.redis.hset(key, mapping={"attrs": 0, "attr_bytes": 0})
    await small.set_state(made.id, metadata={"m": 1})
    assert await store.redis.hmget(key, "attrs", "attr_bytes") == ["0", "0"]
    await small.set_state(made.id, {"a": 1})
    assert await store.redis.hmget(key, "attrs", "attr_bytes") == ["1", "1"]
    with pytest.raises(PayloadTooLarge):
        await small.set_state(made.id, {"b": 2})


async def test_a_record_with_the_long_field_names_reads_as_not_found(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record written with the long field names of earlier builds is not read: every
    reader answers SessionNotFound (no KeyError) and changes nothing."""
    made = await store.create(user_id="bob", state={"n": 1, "m": 2})
    key = store.session_keys(made.id).record
    written = await write_with_long_names(redis, key)
    for call in (
        lambda: store.get(made.id),
        lambda: store.touch(made.id),
        lambda: store.set_state(made.id, {"n": 3}),
        lambda: store.rotate(made.id),
    ):
        with pytest.raises(SessionNotFound):
            await call()
    with pytest.raises(SessionNotFound):
        async with store.track_request(made.id, read_session=True):
            pass
    assert await redis.hgetall(key) == written


async def test_the_user_index_keeps_a_longer_lifetime(store: SessionStore) -> None:
    """A session created with a lifetime past the default stays listed for all of it:
    its entry has no deadline of its own and leaves only with the session."""
    lifetime = store.settings.absolute_lifetime * 3
    made = await store.create(user_id="lena", absolute_lifetime=lifetime)
    assert await indexed_ids(store.context, "lena") == [made.id]
    assert await store.redis.pttl(store.keys.user_index("lena")) == -1, "no TTL to lapse"
    assert [s.id for s in await store.list_for_user("lena")] == [made.id]


async def test_list_for_user_limit_counts_live_sessions(store: SessionStore) -> None:
    """`limit` applies after ended ids are dropped; limit=0 returns nothing."""
    ended = [await store.create(user_id="mo") for _ in range(3)]
    live = await store.create(user_id="mo")
    for session in ended:
        await store.delete(session.id)
    assert [s.id for s in await store.list_for_user("mo", limit=2)] == [live.id]
    assert await store.list_for_user("mo", limit=0) == []
    with pytest.raises(InvalidInput):
        await store.list_for_user("mo", limit=-1)


async def test_list_for_user_limit_returns_that_many(store: SessionStore) -> None:
    """With more live sessions than `limit`, exactly `limit` of them come back."""
    made = {(await store.create(user_id="nia")).id for _ in range(4)}
    listed = await store.list_for_user("nia", limit=3)
    assert len(listed) == 3 and {s.id for s in listed} < made


BAD_TTLS: list[Any] = [
    timedelta.max,
    timedelta(days=-1),
    timedelta(0),
    timedelta(days=365 * 1000),
    30,
    30.0,
    "30",
    True,
    math.nan,
    math.inf,
]


@pytest.mark.parametrize("value", BAD_TTLS, ids=repr)
@pytest.mark.parametrize("name", ["idle_timeout", "absolute_lifetime"])
async def test_bad_ttl_overrides_are_refused_before_any_write(
    store: SessionStore, name: str, value: Any
) -> None:
    """Out-of-range or non-timedelta TTLs raise InvalidInput and write nothing."""
    with pytest.raises(InvalidInput):
        await store.create(user_id="oli", **{name: value})
    counts = await store.counts()
    assert counts.active == 0
    assert await store.redis.hexists(store.keys.user_index("oli"), "oli") == 0


async def test_the_body_error_wins_over_a_lost_lock(store: SessionStore) -> None:
    """An error in the body of ``async with lock`` is what the caller sees, even if the
    lock was lost meanwhile; without one, the lost lock is reported."""
    made = await store.create()
    with pytest.raises(KeyError):
        async with store.lock(made.id):
            await store.redis.delete(store.keys.session(made.id).lock)
            raise KeyError("the body's own error")
    with pytest.raises(LockNotOwned):
        async with store.lock(made.id):
            await store.redis.delete(store.keys.session(made.id).lock)


async def test_user_index_helpers_take_a_context(store: SessionStore) -> None:
    """The user index reads through a bare StoreContext, as every helper does."""
    made = await store.create(user_id="pia")
    context = StoreContext.of(store.redis, store.settings)
    assert [s.id for s in await list_sessions(context, "pia", limit=10)] == [made.id]


async def _indexed(store: SessionStore, user_id: str) -> list[str]:
    return await indexed_ids(store.context, user_id)


async def test_the_user_index_is_right_on_every_path(store: SessionStore) -> None:
    """create, rotate, resume, delete and expire each leave the raw index right,
    without a reader or the repair job pruning it."""
    made = await store.create(user_id="quin")
    assert await _indexed(store, "quin") == [made.id]
    rotated = await store.rotate(made.id)
    assert await _indexed(store, "quin") == [rotated.id]
    await store.expire(rotated.id)
    assert await _indexed(store, "quin") == []
    resumed = await store.resume(rotated.id)
    assert await _indexed(store, "quin") == [resumed.id]
    await store.delete(resumed.id)
    assert await _indexed(store, "quin") == []


async def test_a_listing_between_rotate_and_its_index_update_loses_nothing(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that prunes the old id between rotate's script and its index update
    does not make the new id vanish from the index."""
    from sessionstore.store import _successors

    made = await store.create(user_id="rhea")
    update = _successors._users.move

    async def listing_first(*args: Any) -> None:
        assert await store.list_for_user("rhea") == [], "the old id is rotated, the new not yet in"
        await update(*args)

    monkeypatch.setattr(_successors._users, "move", listing_first)
    rotated = await store.rotate(made.id)
    monkeypatch.undo()
    assert [s.id for s in await store.list_for_user("rhea")] == [rotated.id]


async def test_a_request_lease_follows_a_rotate(
    redis: Any, session_settings: SessionSettings
) -> None:
    """With one request per session (and fleet-wide), a handler that rotates does not
    leave its own lease behind: the next request on the new id is admitted."""
    settings = session_settings.model_copy(
        update={"max_requests_per_session": 1, "max_requests_global": 1}
    )
    store = SessionStore(redis, settings)
    made = await store.create()
    async with store.track_request(made.id) as lease:
        rotated = await store.rotate(made.id)
        await store.leases.renew(lease)
        assert lease.session_id == rotated.id, "renewal found the new id"
    fields = await redis.hgetall(store.keys.session(rotated.id).record)
    assert [name for name in fields if name.startswith("r:")] == []
    assert "request_leases" not in fields
    assert not fields.get("r"), "the slot is empty"
    assert await redis.zcard(store.keys.global_requests()) == 0
    async with store.track_request(rotated.id) as again:
        assert again.live == 1


async def test_a_lock_follows_a_rotate_for_its_holder_only(store: SessionStore) -> None:
    """The holder renews and releases across a rotate; someone with only the old id
    learns nothing, and after the release anyone can take the lock on the new id."""
    made = await store.create()
    held = store.lock(made.id)
    fence = await held.acquire()
    rotated = await store.rotate(made.id)
    with pytest.raises(LockNotOwned):
        await store.lock(made.id, owner="someone-else").release()
    await held.renew()
    assert held.session_id == rotated.id
    await held.release()
    other = store.lock(rotated.id)
    assert await other.acquire(blocking=False) > fence
    await other.release()


async def test_async_with_lock_works_across_a_rotate(store: SessionStore) -> None:
    """``async with store.lock(sid)`` around a rotate (a login handler) releases cleanly."""
    made = await store.create()
    async with store.lock(made.id) as fence:
        rotated = await store.rotate(made.id)
    assert await store.redis.exists(store.keys.session(rotated.id).lock) == 0
    assert await store.lock(rotated.id).acquire(blocking=False) > fence
