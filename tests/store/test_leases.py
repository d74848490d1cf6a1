"""Request and connection leases: limits, reclaim after a crash, renewal."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from sessionstore import (
    GlobalLimitExceeded,
    LockNotAcquired,
    LockNotOwned,
    RedisClient,
    SessionClosed,
    SessionLimitExceeded,
    SessionSettings,
    SessionStore,
)
from tests.polling import eventually
from tests.store.lease_fields import held_deadline, lease_deadline, lease_names


def _store(redis: RedisClient, prefix: str, **changes: object) -> SessionStore:
    return SessionStore(redis, SessionSettings(key_prefix=prefix, shards=4, **changes))  # type: ignore[arg-type]


async def test_track_request_counts_and_returns_the_lease(store: SessionStore) -> None:
    """Inside the block the session shows one active request; after it, none."""
    made = await store.create()
    async with store.track_request(made.id) as lease:
        assert lease.live == 1
        assert (await store.get(made.id)).active_requests == 1
    assert (await store.get(made.id)).active_requests == 0


async def test_lease_is_returned_when_the_body_raises(store: SessionStore) -> None:
    made = await store.create()
    with pytest.raises(RuntimeError):
        async with store.track_request(made.id):
            raise RuntimeError("handler failed")
    assert (await store.get(made.id)).active_requests == 0


async def test_per_session_limit_refuses_with_a_clear_error(
    redis: RedisClient, key_prefix: str
) -> None:
    """The limit holds; the refused request takes nothing."""
    store = _store(redis, key_prefix, max_requests_per_session=2)
    made = await store.create()
    async with store.track_request(made.id), store.track_request(made.id):
        with pytest.raises(SessionLimitExceeded) as caught:
            async with store.track_request(made.id):
                pass  # pragma: no cover
        assert caught.value.limit == 2
        assert (await store.get(made.id)).active_requests == 2
    async with store.track_request(made.id):
        pass


async def test_the_limit_counts_leases_still_held_after_others_are_returned(
    redis: RedisClient, key_prefix: str
) -> None:
    """A take counts every lease still held, however many were taken and returned
    before it: after the last one is returned the next take counts one, and while one
    is held beside a returned one, a third is refused."""
    store = _store(redis, key_prefix, max_requests_per_session=2)
    made = await store.create()
    for _ in range(2):
        async with store.track_request(made.id) as lease:
            assert lease.live == 1
    async with store.track_request(made.id) as first:
        async with store.track_request(made.id) as second:
            assert (first.live, second.live) == (1, 2)
        async with store.track_request(made.id) as third:
            assert third.live == 2
            with pytest.raises(SessionLimitExceeded):
                async with store.track_request(made.id):
                    pass  # pragma: no cover
    async with store.track_request(made.id) as alone:
        assert alone.live == 1
    assert (await store.get(made.id)).active_requests == 0


async def test_global_limit_spans_sessions(redis: RedisClient, key_prefix: str) -> None:
    """A fleet-wide cap counts requests of every session; a refusal gives back
    the per-session half it had taken."""
    store = _store(redis, key_prefix, max_requests_global=2)
    a, b, c = [await store.create() for _ in range(3)]
    async with store.track_request(a.id), store.track_request(b.id):
        with pytest.raises(GlobalLimitExceeded):
            async with store.track_request(c.id):
                pass  # pragma: no cover
        assert (await store.get(c.id)).active_requests == 0
    async with store.track_request(c.id):
        assert await redis.zcard(store.keys.global_requests()) == 1


async def test_crashed_holders_leases_are_reclaimed(redis: RedisClient, key_prefix: str) -> None:
    """A lease never returned (its replica died) stops counting after its TTL."""
    store = _store(
        redis,
        key_prefix,
        max_requests_per_session=1,
        request_lease_ttl=timedelta(milliseconds=200),
    )
    made = await store.create()
    await store.leases.take(made.id)  # taken and abandoned, as by a killed process
    with pytest.raises(SessionLimitExceeded):
        await store.leases.take(made.id)

    async def reclaimed() -> bool:
        try:
            lease = await store.leases.take(made.id)
        except SessionLimitExceeded:
            return False
        await store.leases.release(lease)
        return True

    await eventually(reclaimed, timeout=5)


async def test_held_lease_is_renewed_while_the_body_runs(
    redis: RedisClient, key_prefix: str
) -> None:
    """A long request keeps its lease: after several lease periods it still counts."""
    store = _store(redis, key_prefix, request_lease_ttl=timedelta(milliseconds=150))
    made = await store.create()
    record = store.session_keys(made.id).record
    async with store.track_request(made.id) as lease:
        first = await lease_deadline(redis, record, lease)
        assert first is not None

        async def renewed_twice() -> bool:
            deadline = await lease_deadline(redis, record, lease)
            return deadline is not None and deadline > first + 100

        await eventually(renewed_twice, timeout=5)
        assert (await store.get(made.id)).active_requests == 1


async def test_held_fleet_lease_is_renewed_and_returned(
    redis: RedisClient, key_prefix: str
) -> None:
    """A long request of no session keeps its fleet-wide lease past several lease
    periods (its deadline moves on), and gives it back when the block ends."""
    store = _store(
        redis, key_prefix, request_lease_ttl=timedelta(milliseconds=150), max_requests_global=2
    )
    fleet_key = store.keys.global_requests()
    async with store.track_fleet_request() as held:
        assert held.member is not None
        member = held.member
        first = await redis.zscore(fleet_key, member)
        assert first is not None

        async def renewed_twice() -> bool:
            score = await redis.zscore(fleet_key, member)
            return score is not None and score > first + 100

        await eventually(renewed_twice, timeout=5)
    assert await redis.zscore(fleet_key, member) is None


async def test_a_lease_whose_session_ended_stops_renewing_quietly(
    redis: RedisClient, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection held open while its session is deleted: the next renewal finds the
    session ended and stops with one info line (an expected end, not a fault), without
    a warning or a traceback; the block then returns as usual."""
    store = _store(redis, key_prefix, request_lease_ttl=timedelta(milliseconds=150))
    made = await store.create()
    caplog.set_level(logging.INFO, logger="sessionstore")
    async with store.track_connection(made.id) as lease:
        await store.delete(made.id)

        async def stopped() -> bool:
            return any("stops renewing" in r.getMessage() for r in caplog.records)

        await eventually(stopped, timeout=5)
        assert lease._renewer is not None and lease._renewer.done()
    ours = [r for r in caplog.records if lease.lease_id in r.getMessage()]
    assert [r.levelno for r in ours] == [logging.INFO]
    assert all(r.exc_info is None for r in ours)


async def test_connection_leases_count_connections(store: SessionStore) -> None:
    made = await store.create()
    async with store.track_connection(made.id), store.track_connection(made.id):
        session = await store.get(made.id)
        assert (session.connection_count, session.active_requests) == (2, 0)
    assert (await store.get(made.id)).connection_count == 0


async def test_no_lease_on_a_deleted_session(store: SessionStore) -> None:
    made = await store.create()
    await store.delete(made.id)
    with pytest.raises(SessionClosed):
        async with store.track_request(made.id):
            pass  # pragma: no cover


async def test_lock_excludes_and_only_the_owner_releases(store: SessionStore) -> None:
    made = await store.create()
    first = store.lock(made.id)
    fence = await first.acquire()
    second = store.lock(made.id)
    with pytest.raises(LockNotAcquired):
        await second.acquire(blocking=False)
    with pytest.raises(LockNotOwned):
        await second.release()
    with pytest.raises(LockNotOwned):
        await second.renew()
    await first.renew()
    await first.release()
    assert await second.acquire(blocking=False) == fence + 1


async def test_blocking_acquire_gets_the_lock_when_released(store: SessionStore) -> None:
    made = await store.create()
    holder = store.lock(made.id)
    await holder.acquire()
    waiter = asyncio.create_task(store.lock(made.id).acquire(timeout=timedelta(seconds=10)))

    async def waiting() -> bool:
        return not waiter.done()

    assert await waiting()
    await holder.release()
    assert await asyncio.wait_for(waiter, 10) == 2


async def test_lock_is_dropped_with_the_session(store: SessionStore) -> None:
    made = await store.create()
    lock = store.lock(made.id)
    await lock.acquire()
    await store.expire(made.id)
    assert await store.redis.exists(store.session_keys(made.id).lock) == 0
    with pytest.raises(LockNotOwned):
        await lock.release()


async def test_draft_changes_are_committed_with_the_lease(store: SessionStore) -> None:
    """Only what the request changed is written, once, with a new version."""
    made = await store.create(state={"keep": "x", "n": 1, "drop": [1]})
    async with store.track_request(made.id, read_session=True) as lease:
        assert lease.draft is not None and lease.session is not None
        assert dict(lease.draft) == {"keep": "x", "n": 1, "drop": [1]}
        lease.draft["n"] = 2
        lease.draft["new"] = {"a": None}
        del lease.draft["drop"]
        assert lease.draft.changes() == (["n", "2", "new", '{"a":null}'], ["drop"])
    got = await store.get(made.id)
    assert got.state == {"keep": "x", "n": 2, "new": {"a": None}}
    assert got.version == made.version + 1


async def test_draft_commit_loses_to_a_concurrent_write(store: SessionStore) -> None:
    """Compare-and-set on the version the lease read: a write in between wins, the
    request's changes are not written, the lease is returned all the same."""
    from sessionstore import VersionConflict

    made = await store.create(state={"n": 1})
    with pytest.raises(VersionConflict) as caught:
        async with store.track_request(made.id, read_session=True) as lease:
            assert lease.draft is not None
            lease.draft["n"] = 100
            await store.set_state(made.id, {"n": 2})
    assert caught.value.actual == made.version + 1
    got = await store.get(made.id)
    assert got.state == {"n": 2} and got.active_requests == 0


async def test_draft_is_dropped_when_the_body_raises(store: SessionStore) -> None:
    """A failed request writes nothing; the draft is closed for good."""
    from sessionstore import InvalidInput

    made = await store.create(state={"n": 1})
    with pytest.raises(RuntimeError):
        async with store.track_request(made.id, read_session=True) as lease:
            assert lease.draft is not None
            lease.draft["n"] = 5
            raise RuntimeError("handler failed")
    assert (await store.get(made.id)).state == {"n": 1}
    with pytest.raises(InvalidInput):
        lease.draft["n"] = 6


async def test_draft_refuses_bad_values_where_they_are_set(store: SessionStore) -> None:
    """Bad names and values fail in the handler; the state limits hold at commit."""
    from sessionstore import InvalidInput, PayloadTooLarge

    small = _store(store.redis, store.settings.key_prefix, max_state_bytes=64)
    made = await small.create()
    with pytest.raises(PayloadTooLarge):
        async with small.track_request(made.id, read_session=True) as lease:
            assert lease.draft is not None
            with pytest.raises(InvalidInput):
                lease.draft["bad name!"] = 1
            with pytest.raises(InvalidInput):
                lease.draft["nan"] = float("nan")
            lease.draft["a"] = "x" * 40
            lease.draft["b"] = "y" * 40
    got = await small.get(made.id)
    assert got.state == {} and got.active_requests == 0


async def test_leased_read_of_a_session_ended_right_after_the_take(
    redis: RedisClient, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is read by a plain command after the take's script, not atomically
    with it: a session closed in between fails the take as closed, and the lease and
    its fleet-wide half are given back."""
    from sessionstore._scripts import Arg, Batch
    from sessionstore.store._lua import script

    store = _store(redis, key_prefix, max_requests_global=5)
    made = await store.create()
    keys = store.session_keys(made.id)
    queue_command = Batch.command
    closes = [made.id]

    def close_before_the_read(batch: Batch, *args: object, **options: Any) -> int:
        if args[:2] == ("HGETALL", keys.record) and closes:
            closes.pop()
            end_args: list[Arg] = [made.id, "closed", "deleted", "deleted", 60_000, 100]
            batch.script(script("end"), keys.ordered(), end_args)
        return queue_command(batch, *args, **options)

    monkeypatch.setattr(Batch, "command", close_before_the_read)
    with pytest.raises(SessionClosed):
        async with store.track_request(made.id, read_session=True):
            pass  # pragma: no cover
    monkeypatch.undo()
    assert await redis.zcard(store.keys.global_requests()) == 0
    assert await redis.exists(keys.record) == 0


async def test_leases_are_record_fields_and_never_state(
    store: SessionStore, redis: RedisClient
) -> None:
    """A held lease is in the session record with its deadline: a kind's first in its
    slot, one taken beside it in a field of its own with a count of such fields; the
    state never shows either, and the returns leave no lease and no count behind."""
    made = await store.create(state={"n": 1})
    record = store.session_keys(made.id).record
    async with store.track_request(made.id) as request, store.track_connection(made.id) as conn:
        fields = await redis.hgetall(record)
        assert fields["r"].startswith(f"{request.lease_id} ")
        assert fields["c"].startswith(f"{conn.lease_id} ")
        for lease in (request, conn):
            assert (held_deadline(fields, lease) or 0) > int(fields["created"])
        assert "request_leases" not in fields and "conn_leases" not in fields
        async with store.track_request(made.id) as second, store.track_connection(made.id) as third:
            fields = await redis.hgetall(record)
            assert int(fields[f"r:{second.lease_id}"]) > int(fields["created"])
            assert int(fields[f"c:{third.lease_id}"]) > int(fields["created"])
            assert (fields["request_leases"], fields["conn_leases"]) == ("1", "1")
            got = await store.get(made.id)
            assert got.state == {"n": 1}
            assert (got.active_requests, got.connection_count) == (2, 2)
        got = await store.get(made.id)
        assert (got.active_requests, got.connection_count) == (1, 1)
    assert lease_names(await redis.hgetall(record)) == []


async def test_a_take_without_leases_in_fields_scans_nothing(
    store: SessionStore, redis: RedisClient
) -> None:
    """The common take (no lease of its kind held, or only the slot's) neither scans the
    record nor counts; with a lease held in a field of its own, the take looks through
    the lease fields to count them."""
    from tests.monitor import commands_run

    made = await store.create()
    async with commands_run(redis) as alone, store.track_request(made.id):
        pass
    async with store.track_request(made.id):
        async with commands_run(redis) as beside_slot:
            second = await store.leases.take(made.id)
        async with commands_run(redis) as beside_field:
            third = await store.leases.take(made.id)
        assert (second.live, third.live) == (2, 3)
        for lease in (second, third):
            await store.leases.release(lease)
    assert [c for c in alone if c[0] == "HSCAN"] == []
    assert [c for c in beside_slot if c[0] == "HSCAN"] == []
    assert [c[0] for c in beside_field if c[0] == "HSCAN"] == ["HSCAN"]


async def test_a_lapsed_lease_is_dropped_by_the_next_take(
    redis: RedisClient, key_prefix: str
) -> None:
    """A crashed holder's leases (never returned) do not count once lapsed, and the
    next take drops them: the slot's is overwritten, one in a field of its own deleted;
    the count follows."""
    # Long enough for the two takes to overlap on a loaded machine.
    store = _store(redis, key_prefix, request_lease_ttl=timedelta(seconds=1))
    made = await store.create()
    record = store.session_keys(made.id).record
    abandoned = await store.leases.take(made.id)
    beside = await store.leases.take(made.id)
    assert await redis.hexists(record, f"r:{beside.lease_id}")
    assert await redis.hget(record, "request_leases") == "1"

    async def lapsed() -> bool:
        return (await store.get(made.id)).active_requests == 0

    await eventually(lapsed, timeout=10)
    assert await lease_deadline(redis, record, abandoned) is not None
    lease = await store.leases.take(made.id)
    assert lease.live == 1
    assert await lease_deadline(redis, record, abandoned) is None
    assert not await redis.hexists(record, f"r:{beside.lease_id}")
    assert await lease_deadline(redis, record, lease) is not None
    assert await redis.hget(record, "request_leases") is None
    await store.leases.release(lease)
    assert lease_names(await redis.hgetall(record)) == []


async def test_both_leases_of_a_kind_follow_a_rotate(
    store: SessionStore, redis: RedisClient
) -> None:
    """The slot's lease and one in a field of its own both move with a rotate: each
    holder renews and returns its own on the new id, which then holds none."""
    made = await store.create()
    first = await store.leases.take(made.id)
    second = await store.leases.take(made.id)
    rotated = await store.rotate(made.id)
    for lease in (first, second):
        await store.leases.renew(lease)
        assert lease.session_id == rotated.id
    assert (await store.get(rotated.id)).active_requests == 2
    for lease in (first, second):
        await store.leases.release(lease)
    assert (await store.get(rotated.id)).active_requests == 0
    assert lease_names(await redis.hgetall(store.session_keys(rotated.id).record)) == []
