"""Upstream connection records in Redis: one script per write, Redis time, no resurrection.

Every test runs on a standalone Redis and on a Redis Cluster (`store` fixture).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sessionstore import (
    InvalidInput,
    RedisClient,
    SessionClosed,
    SessionExpired,
    SessionRotated,
    SessionStore,
    UpstreamError,
)
from sessionstore.upstream import (
    StoredCredential,
    UpstreamRecords,
    UpstreamSpec,
    UpstreamState,
)
from tests.conftest import RoundTrips

SPEC = UpstreamSpec(name="mail", host="imap.example.com", port=993, username="alice@example.com")
REF = StoredCredential(ref="env:ALICE_IMAP")


async def test_register_then_read_back(store: SessionStore, redis: RedisClient) -> None:
    """A registered record reads back with its spec, state closed, and Redis times."""
    session = await store.create(user_id="alice")
    records = UpstreamRecords(store)
    made = await records.register(session.id, SPEC, REF)
    got = await records.get(session.id, "mail")
    assert got == made
    assert got is not None and got.state is UpstreamState.CLOSED
    assert got.spec == SPEC and got.credential == REF
    assert got.spec.breaker_name == "imap:imap.example.com:993"
    assert got.attempts == 0 and got.last_success is None
    assert abs(got.registered_at - session.created_at) < timedelta(seconds=5)
    assert await records.list(session.id) == {"mail": got}
    raw = await redis.hget(store.session_keys(session.id).upstreams, "mail")
    assert json.loads(raw)["spec"]["host"] == "imap.example.com"  # readable with redis-cli


async def test_updates_stamp_redis_time_and_count_attempts(store: SessionStore) -> None:
    """Failures count attempts and schedule; a success resets both and clears the error."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    failing = await records.update(
        session.id,
        "mail",
        state=UpstreamState.RECONNECTING,
        error="timeout: TimeoutError: " + "x" * 1000,
        attempts="incr",
        next_attempt_in=timedelta(seconds=30),
    )
    again = await records.update(session.id, "mail", attempts="incr")
    assert failing.state is UpstreamState.RECONNECTING
    assert failing.last_error is not None and len(failing.last_error) == 300
    assert failing.last_error_at is not None and failing.next_attempt_at is not None
    assert failing.next_attempt_at - failing.last_error_at == timedelta(seconds=30)
    assert again.attempts == 2
    healed = await records.update(
        session.id,
        "mail",
        state=UpstreamState.CONNECTED,
        success=True,
        attempts="reset",
        clear_next_attempt=True,
        response_time_ms=12.3456,
    )
    assert healed.attempts == 0 and healed.next_attempt_at is None and healed.last_error is None
    assert healed.last_success is not None and healed.checked_at == healed.last_success
    assert healed.response_time_ms == 12.346


async def test_each_write_is_one_round_trip(store: SessionStore, round_trips: RoundTrips) -> None:
    """register and update are one script call each (once the script is cached)."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)  # the first call may load the script
    round_trips.reset()
    await records.register(session.id, SPEC, REF)
    await records.update(session.id, "mail", state=UpstreamState.CONNECTED, success=True)
    assert round_trips.total == 2


async def test_ended_session_refuses_writes_and_loses_its_records(store: SessionStore) -> None:
    """Delete drops the records; a late write is refused and writes nothing."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    await store.delete(session.id)
    assert await records.list(session.id) == {}
    with pytest.raises(SessionClosed):
        await records.update(session.id, "mail", state=UpstreamState.CONNECTED)
    with pytest.raises(SessionClosed):
        await records.register(session.id, SPEC, REF)
    assert await records.get(session.id, "mail") is None


async def test_a_register_marks_the_record_and_a_refused_one_writes_nothing(
    store: SessionStore, redis: RedisClient
) -> None:
    """A register sets the record's `extras` (ending the session then drops the records
    hash); a session without records has no such field, and a register refused for an
    ended session creates neither a record nor a records hash."""
    session, plain = await store.create(), await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    assert await redis.hget(store.session_keys(session.id).record, "extras") == "1"
    assert not await redis.hexists(store.session_keys(plain.id).record, "extras")
    await store.delete(plain.id)
    with pytest.raises(SessionClosed):
        await records.register(plain.id, SPEC, REF)
    keys = store.session_keys(plain.id)
    assert await redis.exists(keys.record, keys.upstreams) == 0


async def test_expired_session_takes_its_records(store: SessionStore) -> None:
    """Expiry (as the sweeper does it) deletes the upstream records with the session."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    assert await store.expire(session.id)
    assert await records.list(session.id) == {}
    with pytest.raises(SessionExpired):
        await records.update(session.id, "mail", success=True)


async def test_rotate_moves_the_records(store: SessionStore) -> None:
    """Rotation carries the records to the new id; the old id refuses writes."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    rotated = await store.rotate(session.id)
    assert set(await records.list(rotated.id)) == {"mail"}
    assert await records.list(session.id) == {}
    with pytest.raises(SessionRotated):
        await records.update(session.id, "mail", success=True)


async def test_the_hash_never_outlives_the_session_bound(
    store: SessionStore, redis: RedisClient
) -> None:
    """The records hash has a TTL no longer than the absolute deadline plus the grace."""
    session = await store.create(absolute_lifetime=timedelta(minutes=5))
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    ttl = await redis.pttl(store.session_keys(session.id).upstreams)
    bound = timedelta(minutes=5) + store.settings.sweep_grace
    assert 0 < ttl <= bound.total_seconds() * 1000


async def test_record_count_is_bounded(store: SessionStore) -> None:
    """A session holds at most max_per_session records; the refused one is not written."""
    session = await store.create()
    records = UpstreamRecords(store, max_per_session=2)
    for name in ("a", "b"):
        await records.register(session.id, SPEC.model_copy(update={"name": name}), REF)
    with pytest.raises(InvalidInput, match="limit 2"):
        await records.register(session.id, SPEC.model_copy(update={"name": "c"}), REF)
    await records.register(session.id, SPEC.model_copy(update={"name": "a"}), REF)  # replace
    assert set(await records.list(session.id)) == {"a", "b"}


async def test_state_guard_and_unknown_names(store: SessionStore) -> None:
    """only_states refuses a write from a stale actor; unknown names are errors."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    with pytest.raises(UpstreamError, match="closed"):
        await records.update(
            session.id,
            "mail",
            state=UpstreamState.CONNECTED,
            only_states=(UpstreamState.RECONNECTING,),
        )
    got = await records.get(session.id, "mail")
    assert got is not None and got.state is UpstreamState.CLOSED
    with pytest.raises(UpstreamError, match="no upstream 'nope'"):
        await records.update(session.id, "nope", success=True)
    assert await records.remove(session.id, "mail")
    assert not await records.remove(session.id, "mail")


async def test_state_changes_emit_upstream_events(store: SessionStore, redis: RedisClient) -> None:
    """A change of state appends an `upstream` event; an unchanged state does not."""
    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    await records.update(session.id, "mail", state=UpstreamState.CONNECTED)
    await records.update(session.id, "mail", state=UpstreamState.CONNECTED, success=True)
    stream = store.session_keys(session.id).events
    events = [
        fields
        for _, fields in await redis.xrange(stream)
        if fields["kind"] == "upstream" and fields["session_id"] == session.id
    ]
    assert [(e["upstream"], e["state"]) for e in events] == [
        ("mail", "closed"),
        ("mail", "connected"),
    ]


async def test_options_round_trip_exactly(store: SessionStore, redis: RedisClient) -> None:
    """Connector options come back exactly as registered, through register and updates
    (no 14-digit rounding), and the stored record stays readable JSON."""
    session = await store.create()
    records = UpstreamRecords(store)
    options = {"big": 12345678901234567, "ratio": 0.1 + 0.2, "tiny": 5e-324, "s": 'x,"spec":1'}
    spec = SPEC.model_copy(update={"options": options})
    await records.register(session.id, spec, REF)
    await records.update(session.id, "mail", state=UpstreamState.CONNECTED, attempts="incr")
    got = await records.get(session.id, "mail")
    assert got is not None and got.spec.options == options
    assert got.state is UpstreamState.CONNECTED and got.attempts == 1
    raw = await redis.hget(store.session_keys(session.id).upstreams, "mail")
    assert json.loads(raw)["spec"]["options"]["big"] == 12345678901234567


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_options_are_refused_before_any_write(
    store: SessionStore, redis: RedisClient, bad: float
) -> None:
    """A NaN or infinite option is refused with InvalidInput; no record, no counter."""
    session = await store.create()
    records = UpstreamRecords(store)
    spec = SPEC.model_copy(update={"options": {"x": bad}})
    with pytest.raises(InvalidInput):
        await records.register(session.id, spec, REF)
    keys = store.session_keys(session.id)
    assert await redis.exists(keys.upstreams) == 0
    assert await redis.hget(keys.stats, "upstream_registered") is None


async def test_the_script_checks_everything_before_its_first_write(
    store: SessionStore, redis: RedisClient
) -> None:
    """A value the script cannot store (an infinite number sent raw) fails the call
    with no counter bumped and the record as it was."""
    import redis.exceptions as rex

    from sessionstore._scripts import call
    from sessionstore.upstream._records import _scripts

    session = await store.create()
    records = UpstreamRecords(store)
    await records.register(session.id, SPEC, REF)
    keys = store.session_keys(session.id)
    before = await redis.hget(keys.upstreams, "mail")
    stats_before = await redis.hgetall(keys.stats)
    args = [session.id, "update", "mail", 1000, 100, 16, '{"checked_at":1e999}', "", "incr", "", ""]
    with pytest.raises(rex.ResponseError, match="serialise"):
        await call(redis, _scripts("upstream"), keys.ordered(), args)
    assert await redis.hget(keys.upstreams, "mail") == before
    assert await redis.hgetall(keys.stats) == stats_before
