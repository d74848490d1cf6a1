"""SessionStore against a real Redis: every test runs on standalone and on Cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessionstore import (
    InvalidInput,
    PayloadTooLarge,
    RedisClient,
    SessionClosed,
    SessionExpired,
    SessionNotFound,
    SessionRotated,
    SessionSettings,
    SessionStatus,
    SessionStore,
    SessionStoreError,
    StaleFence,
    Tombstone,
    VersionConflict,
    new_session_id,
)
from sessionstore._time import ms_to_datetime
from sessionstore.store._users import indexed_ids
from tests.polling import eventually, until_raises

SHORT = timedelta(milliseconds=150)


async def test_create_then_get_returns_what_was_created(store: SessionStore) -> None:
    """A created session reads back with its user, conversation, metadata and state."""
    made = await store.create(
        user_id="alice@example.com",
        conversation_id="conv-1",
        metadata={"client": "web"},
        state={"counter": 0, "tool": "list_nodes"},
    )
    got = await store.get(made.id)
    assert got.status is SessionStatus.ACTIVE
    assert (got.user_id, got.conversation_id) == ("alice@example.com", "conv-1")
    assert got.metadata == {"client": "web"}
    assert got.state == {"counter": 0, "tool": "list_nodes"}
    assert got.version == 1 and got.fence == 0
    assert got.created_at == made.created_at
    assert got.idle_deadline - got.last_activity == store.settings.idle_timeout
    assert got.absolute_deadline - got.created_at == store.settings.absolute_lifetime


async def test_record_is_readable_with_redis_cli_field_names(
    store: SessionStore, redis: RedisClient
) -> None:
    """The hash has plain field names and one field per state attribute; fields with
    nothing to say (no conversation, empty metadata, no lock yet, version 1, the last
    activity the deadline and timeout give) are left out."""
    made = await store.create(user_id="bob", state={"a": 1, "b": [1, 2]})
    key = store.session_keys(made.id).record
    fields = await redis.hgetall(key)
    for name in (
        "user_id",
        "created",
        "idle_ms",
        "idle_end",
        "life_end",
    ):
        assert name in fields
    assert fields["a:a"] == "1" and fields["a:b"] == "[1,2]"
    left_out = {"conversation_id", "metadata", "fence", "resumed_from", "last_activity", "version"}
    assert not left_out & set(fields)
    ttl = await redis.pttl(key)
    assert ttl > 0, "every key has a TTL"
    await store.set_state(made.id, metadata={"client": "web"})
    async with store.lock(made.id):
        fields = await redis.hgetall(key)
    assert fields["metadata"] == '{"client":"web"}' and fields["fence"] == "1"
    await store.set_state(made.id, metadata={})
    assert "metadata" not in await redis.hgetall(key)
    assert (await store.get(made.id)).metadata == {}


async def test_record_with_and_without_stored_last_activity_reads_the_same(
    store: SessionStore, redis: RedisClient
) -> None:
    """`last_activity` is derived from the idle deadline and timeout, so a record that
    stores it (as earlier releases wrote every record) and one that does not give the
    same session."""
    made = await store.create(user_id="bob", state={"a": 1})
    await store.touch(made.id)
    key = store.session_keys(made.id).record
    fields = await redis.hgetall(key)
    idle = int(fields["idle_end"]) - int(fields["idle_ms"])
    await redis.hset(key, "last_activity", idle)
    stored = await store.get(made.id)
    await redis.hdel(key, "last_activity")
    derived = await store.get(made.id)
    assert stored == derived
    assert derived.last_activity == ms_to_datetime(idle)
    assert derived.idle_deadline - derived.last_activity == store.settings.idle_timeout


async def test_new_record_leaves_out_last_activity_and_version(
    store: SessionStore, redis: RedisClient
) -> None:
    """A new record stores neither `last_activity` nor `version`, and no write other
    than a state write adds them: it reads at version 1 with its last activity where
    the latest slide put the deadline, a compare-and-set write takes it from version 1
    (storing 2), and a lease's draft commit from there."""
    made = await store.create(user_id="bob", state={"n": 1})
    key = store.session_keys(made.id).record
    await store.touch(made.id)
    async with store.track_request(made.id):
        pass
    fields = await redis.hgetall(key)
    assert not {"last_activity", "version"} & set(fields)
    got = await store.get(made.id)
    assert got.version == 1
    assert got.last_activity == ms_to_datetime(int(fields["idle_end"]) - int(fields["idle_ms"]))
    assert got.last_activity >= made.last_activity
    with pytest.raises(VersionConflict) as caught:
        await store.set_state(made.id, {"n": 2}, expected_version=2)
    assert caught.value.actual == 1
    assert "version" not in await redis.hgetall(key), "a refused write stores nothing"
    assert await store.set_state(made.id, {"n": 2}, expected_version=1) == 2
    assert (await redis.hgetall(key))["version"] == "2"
    async with store.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None and lease.session is not None
        assert lease.session.version == 2
        lease.draft["n"] = 3
    got = await store.get(made.id)
    assert (got.state, got.version) == ({"n": 3}, 3)
    assert "last_activity" not in await redis.hgetall(key)


async def test_record_with_last_activity_and_version_reads_and_writes_as_before(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record that stores both fields (as earlier builds wrote every record) is read
    with the last activity its deadline gives, and its stored version is the
    compare-and-set target of state writes and lease commits."""
    made = await store.create(user_id="bob", state={"n": 1})
    key = store.session_keys(made.id).record
    created = (await redis.hgetall(key))["created"]
    await redis.hset(key, mapping={"last_activity": created, "version": 4})
    await store.touch(made.id)
    got = await store.get(made.id)
    fields = await redis.hgetall(key)
    assert got.version == 4
    assert got.last_activity == ms_to_datetime(int(fields["idle_end"]) - int(fields["idle_ms"]))
    assert got.idle_deadline - got.last_activity == store.settings.idle_timeout
    with pytest.raises(VersionConflict) as caught:
        await store.set_state(made.id, {"n": 2}, expected_version=1)
    assert caught.value.actual == 4
    assert await store.set_state(made.id, {"n": 2}, expected_version=4) == 5
    async with store.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None and lease.session is not None
        assert lease.session.version == 5
        lease.draft["n"] = 3
        del lease.draft["n"]
        lease.draft["m"] = 1
    got = await store.get(made.id)
    assert (got.state, got.version) == ({"m": 1}, 6)
    fields = await redis.hgetall(key)
    assert (fields["version"], fields["attrs"]) == ("6", "1")


async def test_record_without_version_is_at_version_one(
    store: SessionStore, redis: RedisClient
) -> None:
    """A record that leaves out `version` (and `last_activity`) reads at version 1, and
    compare-and-set writes and a lease's draft commit take it from there."""
    made = await store.create(state={"n": 1})
    key = store.session_keys(made.id).record
    await redis.hdel(key, "version", "last_activity")
    assert (await store.get(made.id)).version == 1
    with pytest.raises(VersionConflict) as caught:
        await store.set_state(made.id, {"n": 2}, expected_version=2)
    assert caught.value.actual == 1
    assert await store.set_state(made.id, {"n": 2}, expected_version=1) == 2
    await redis.hdel(key, "version")
    async with store.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None and lease.session is not None
        assert lease.session.version == 1
        lease.draft["n"] = 3
    got = await store.get(made.id)
    assert got.state == {"n": 3} and got.version == 2
    assert (await redis.hgetall(key))["version"] == "2"


async def test_get_has_no_side_effects(store: SessionStore) -> None:
    """get does not move last_activity; touch does."""
    made = await store.create()
    first = await store.get(made.id)
    second = await store.get(made.id)
    assert second.last_activity == first.last_activity
    new_deadline = await store.touch(made.id)
    assert new_deadline >= first.idle_deadline
    assert (await store.get(made.id)).last_activity >= first.last_activity


async def test_state_write_touches_only_named_attributes(
    store: SessionStore, redis: RedisClient
) -> None:
    """Writing one attribute leaves the others' stored bytes alone; delete removes one."""
    made = await store.create(state={"keep": {"x": 1}, "change": 1, "drop": True})
    version = await store.set_state(made.id, {"change": 2, "new": "n"}, delete=["drop"])
    assert version == 2
    got = await store.get(made.id)
    assert got.state == {"keep": {"x": 1}, "change": 2, "new": "n"}
    assert await redis.hget(store.session_keys(made.id).record, "a:keep") == '{"x":1}'


async def test_compare_and_set_refuses_a_stale_version(store: SessionStore) -> None:
    """A write with the wrong expected version changes nothing."""
    made = await store.create(state={"n": 1})
    await store.set_state(made.id, {"n": 2}, expected_version=1)
    with pytest.raises(VersionConflict) as caught:
        await store.set_state(made.id, {"n": 99}, expected_version=1)
    assert caught.value.actual == 2
    assert (await store.get(made.id)).state == {"n": 2}


async def test_mutate_applies_a_function_and_retries_on_conflict(store: SessionStore) -> None:
    """mutate re-reads after a conflicting write and applies fn to the fresh state."""
    made = await store.create(state={"n": 0})
    calls = 0

    async def bump_with_interference(state: dict[str, object]) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:  # another replica writes between our read and our write
            await store.set_state(made.id, {"n": 10})
        return {**state, "n": int(state["n"]) + 1}  # type: ignore[call-overload]

    result = await store.mutate(made.id, bump_with_interference)
    assert calls == 2
    assert result.state == {"n": 11}
    assert (await store.get(made.id)).state == {"n": 11}


async def test_oversized_state_is_refused_and_nothing_changes(store: SessionStore) -> None:
    """Over the per-session byte limit (checked atomically in Redis) nothing is written."""
    settings = store.settings.model_copy(update={"max_state_bytes": 100})
    small = SessionStore(store.redis, settings)
    made = await small.create(state={"a": "x" * 50})
    with pytest.raises(PayloadTooLarge):
        await small.set_state(made.id, {"b": "y" * 60})
    got = await small.get(made.id)
    assert got.state == {"a": "x" * 50} and got.version == 1


async def test_too_many_attributes_is_refused(store: SessionStore) -> None:
    settings = store.settings.model_copy(update={"max_attributes": 2})
    small = SessionStore(store.redis, settings)
    made = await small.create(state={"a": 1, "b": 2})
    with pytest.raises(PayloadTooLarge):
        await small.set_state(made.id, {"c": 3})
    await small.set_state(made.id, {"c": 3}, delete=["a"])  # replacing stays within the limit
    assert (await small.get(made.id)).state == {"b": 2, "c": 3}


async def test_delete_leaves_a_tombstone_and_refuses_writes(store: SessionStore) -> None:
    """No resurrection: writes, touches and leases on a deleted id fail."""
    made = await store.create(user_id="carol")
    assert await store.delete(made.id) is True
    assert await store.delete(made.id) is False
    with pytest.raises(SessionClosed):
        await store.get(made.id)
    with pytest.raises(SessionClosed):
        await store.set_state(made.id, {"x": 1})
    with pytest.raises(SessionClosed):
        await store.touch(made.id)
    with pytest.raises(SessionClosed):
        await store.resume(made.id)
    tomb = await store.lookup(made.id)
    assert isinstance(tomb, Tombstone) and tomb.status is SessionStatus.CLOSED
    assert tomb.user_id == "carol"
    ttl = await store.redis.pttl(store.session_keys(made.id).tombstone)
    assert 0 < ttl <= store.settings.expired_retention.total_seconds() * 1000


async def test_unknown_id_is_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound):
        await store.get("0.AAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(SessionNotFound):
        await store.delete("0.AAAAAAAAAAAAAAAAAAAAAAAA")


async def test_idle_session_expires_without_a_sweep(store: SessionStore) -> None:
    """Past its idle deadline a session answers expired at once, before any sweep."""
    made = await store.create(idle_timeout=SHORT)

    await until_raises(lambda: store.get(made.id), SessionExpired, timeout=5)
    looked = await store.lookup(made.id)
    assert looked.status is SessionStatus.EXPIRED
    with pytest.raises(SessionExpired):
        await store.set_state(made.id, {"x": 1})


async def test_absolute_lifetime_bounds_an_active_session(store: SessionStore) -> None:
    """Touching does not extend a session past its absolute deadline."""
    made = await store.create(absolute_lifetime=timedelta(milliseconds=300))
    assert made.expires_at == made.absolute_deadline

    await until_raises(lambda: store.touch(made.id), SessionExpired, timeout=5)


async def test_expire_now_then_resume_issues_a_linked_session(store: SessionStore) -> None:
    """resume of an expired id: new id, linked both ways, identity carried, state not."""
    made = await store.create(
        user_id="dan", conversation_id="c9", metadata={"m": 1}, state={"secret": "x"}
    )
    assert await store.expire(made.id) is True
    with pytest.raises(SessionExpired) as caught:
        await store.get(made.id)
    assert caught.value.superseded_by is None
    resumed = await store.resume(made.id)
    assert resumed.id != made.id
    assert resumed.resumed_from == made.id
    assert (resumed.user_id, resumed.conversation_id, resumed.metadata) == ("dan", "c9", {"m": 1})
    assert resumed.state == {}
    with pytest.raises(SessionExpired) as caught:
        await store.get(made.id)
    assert caught.value.superseded_by is None, "the old id never names its successor"
    tomb = await store.lookup(made.id, with_successor=True)
    assert isinstance(tomb, Tombstone) and tomb.superseded_by == resumed.id, "operators see it"
    with pytest.raises(SessionExpired) as caught:
        await store.resume(made.id)
    assert caught.value.superseded_by is None, "the successor is handed out once"


async def test_resume_of_active_session_returns_it(store: SessionStore) -> None:
    made = await store.create(state={"k": "v"})
    resumed = await store.resume(made.id)
    assert resumed.id == made.id and resumed.state == {"k": "v"}


async def test_resume_of_an_overdue_unswept_session(store: SessionStore) -> None:
    """An overdue record is expired and succeeded in the same script."""
    made = await store.create(idle_timeout=SHORT, user_id="eve")

    async def overdue() -> bool:
        return (await store.lookup(made.id)).status is SessionStatus.EXPIRED

    await eventually(overdue, timeout=5)
    resumed = await store.resume(made.id)
    assert resumed.resumed_from == made.id and resumed.user_id == "eve"
    tomb = await store.lookup(made.id, with_successor=True)
    assert isinstance(tomb, Tombstone) and tomb.superseded_by == resumed.id
    assert tomb.reason == "idle"


async def test_rotate_keeps_the_data_under_a_new_id(store: SessionStore) -> None:
    made = await store.create(user_id="fay", state={"cart": [1, 2]})
    held = store.lock(made.id)
    fence = await held.acquire()
    rotated = await store.rotate(made.id)
    assert rotated.fence == fence
    # The lock moved with the session: its owner releases it under the new id.
    await store.lock(rotated.id, owner=held.owner).release()
    assert rotated.id != made.id and rotated.rotated_from == made.id
    assert rotated.state == {"cart": [1, 2]} and rotated.user_id == "fay"
    with pytest.raises(SessionRotated) as caught:
        await store.get(made.id)
    assert caught.value.superseded_by is None, "the old id never names its successor"
    tomb = await store.lookup(made.id, with_successor=True)
    assert isinstance(tomb, Tombstone) and tomb.superseded_by == rotated.id, "operators see it"
    with pytest.raises(SessionRotated):
        await store.resume(made.id)
    assert [s.id for s in await store.list_for_user("fay")] == [rotated.id]


async def test_list_for_user_prunes_ended_sessions(store: SessionStore) -> None:
    one = await store.create(user_id="gus")
    two = await store.create(user_id="gus")
    await store.create(user_id="someone-else")
    assert {s.id for s in await store.list_for_user("gus")} == {one.id, two.id}
    await store.delete(one.id)
    assert [s.id for s in await store.list_for_user("gus")] == [two.id]
    assert await indexed_ids(store.context, "gus") == [two.id], "the stale entry was pruned"
    assert len(await indexed_ids(store.context, "someone-else")) == 1, "other users keep theirs"


async def test_counts_are_read_from_the_expiry_index(store: SessionStore) -> None:
    sessions = [await store.create() for _ in range(5)]
    await store.create(idle_timeout=SHORT)
    await store.delete(sessions[0].id)
    await store.expire(sessions[1].id)

    async def one_overdue() -> bool:
        return (await store.counts()).overdue == 1

    await eventually(one_overdue, timeout=5)
    counts = await store.counts()
    assert counts.active == 3
    assert counts.totals["created"] == 6
    assert counts.totals["closed"] == 1 and counts.totals["expired"] == 1
    assert counts.oldest_overdue is not None and counts.oldest_overdue <= counts.at
    assert counts.sweeper_lag == counts.at - counts.oldest_overdue
    assert len(counts.shards) == store.settings.shards


async def test_fenced_write_is_refused_after_a_newer_lock(store: SessionStore) -> None:
    """A holder whose lease lapsed cannot write over the newer holder."""
    made = await store.create()
    slow = store.lock(made.id, ttl=timedelta(milliseconds=100))
    old_fence = await slow.acquire()

    fast = store.lock(made.id)
    new_fence = await fast.acquire(timeout=timedelta(seconds=5))
    assert new_fence > old_fence
    await store.set_state(made.id, {"owner": "fast"}, fence=new_fence)
    with pytest.raises(StaleFence):
        await store.set_state(made.id, {"owner": "slow"}, fence=old_fence)
    assert (await store.get(made.id)).state == {"owner": "fast"}


async def test_bad_input_changes_nothing(store: SessionStore) -> None:
    made = await store.create(state={"a": 1})
    with pytest.raises(InvalidInput):
        await store.set_state(made.id, {"bad name!": 1})
    with pytest.raises(InvalidInput):
        await store.set_state(made.id, {"a": float("nan")})
    with pytest.raises(InvalidInput):
        await store.create(user_id="has space")
    with pytest.raises(InvalidInput):
        await store.create(idle_timeout=timedelta(0))
    with pytest.raises(InvalidInput):
        await store.set_state(made.id, {"a": 2}, delete=["a"])
    got = await store.get(made.id)
    assert got.state == {"a": 1} and got.version == 1


async def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        SessionSettings(idle_timeout=timedelta(0))


async def test_create_with_an_id_drawn_before(store: SessionStore) -> None:
    """A caller that hands an id out before the session exists creates it with that id;
    the same id again, live or ended, is refused and changes nothing."""
    drawn = new_session_id(1)
    created = await store.create(session_id=drawn, metadata={"n": 1})
    assert created.id == drawn and (await store.get(drawn)).metadata == {"n": 1}
    with pytest.raises(SessionStoreError, match="session id taken"):
        await store.create(session_id=drawn, metadata={"n": 2})
    assert (await store.get(drawn)).metadata == {"n": 1}
    await store.delete(drawn)
    with pytest.raises(SessionStoreError, match="session id taken"):
        await store.create(session_id=drawn)
