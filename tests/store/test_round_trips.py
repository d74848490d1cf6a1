"""Every hot-path operation is exactly one round trip.

The `round_trips` fixture counts socket writes per connection: a single
command or a whole pipeline is one write. On a cluster, operations that touch
one session's keys stay on one node; create with a user and request leases
under a global limit send to at most two nodes concurrently, one write each.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis.asyncio.cluster import RedisCluster

from sessionstore import SessionSettings, SessionStore, sweep_store
from sessionstore import SessionStore as Store
from sessionstore._redis import is_cluster
from tests.conftest import RoundTrips
from tests.polling import eventually


async def _warm(store: SessionStore) -> str:
    """Load the scripts, open a connection to every node and learn the cluster slot
    map before counting, as a server does at start-up."""
    assert await store.load_scripts() >= 10
    if is_cluster(store.redis):
        await store.redis.ping(target_nodes=RedisCluster.ALL_NODES)  # type: ignore[call-arg]
    made = await store.create(user_id="warm")
    await store.get(made.id)
    async with store.track_request(made.id):
        pass
    return made.id


async def test_each_hot_path_operation_is_one_round_trip(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """create, get, touch, a state write, begin/end request, lock acquire/release,
    and resume of an active session each send exactly one write to one node."""
    await _warm(store)
    counted: dict[str, int] = {}

    async def count(name: str, op: object) -> object:
        round_trips.reset()
        result = await op  # type: ignore[misc]
        counted[name] = round_trips.total
        assert len(round_trips.by_node) == 1, f"{name} reached {dict(round_trips.by_node)}"
        return result

    session = await count("create", store.create())
    sid = session.id  # type: ignore[attr-defined]
    await count("get", store.get(sid))
    await count("touch", store.touch(sid))
    await count("set_state", store.set_state(sid, {"a": 1}))
    tracker = store.track_request(sid)
    await count("begin_request", tracker.__aenter__())
    await count("end_request", tracker.__aexit__(None, None, None))
    lock = store.lock(sid)
    await count("lock_acquire", lock.acquire())
    await count("lock_release", lock.release())
    await count("resume_active", store.resume(sid))
    assert counted == dict.fromkeys(counted, 1)
    assert len(counted) == 9


async def test_create_with_user_is_one_write_per_node(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """The user index is pipelined with the create script: one write per node touched,
    so exactly one on a single Redis."""
    await _warm(store)
    round_trips.reset()
    await store.create(user_id="hana")
    assert set(round_trips.by_node.values()) == {1}
    assert 1 <= len(round_trips.by_node) <= 2


async def test_global_limit_lease_is_one_write_per_node(
    redis: object, key_prefix: str, round_trips: RoundTrips
) -> None:
    """With a fleet-wide limit, the global lease rides in the same pipeline."""
    store = Store(redis, SessionSettings(key_prefix=key_prefix, max_requests_global=10))  # type: ignore[arg-type]
    sid = await _warm(store)
    round_trips.reset()
    async with store.track_request(sid):
        assert set(round_trips.by_node.values()) == {1}
        round_trips.reset()
    assert set(round_trips.by_node.values()) == {1}


async def test_malformed_ids_never_reach_redis(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """Key injection attempts are refused before any byte is sent."""
    from sessionstore import InvalidSessionId

    await _warm(store)
    round_trips.reset()
    for bad in ["*", "0.*", "{0}.x", "0.aaaa\r\nFLUSHALL", "9" * 10_000, "", "0." + "A" * 23]:
        with pytest.raises(InvalidSessionId):
            await store.get(bad)
        with pytest.raises(InvalidSessionId):
            await store.set_state(bad, {"a": 1})
    assert round_trips.total == 0


async def test_a_lease_can_bring_the_session_in_the_same_round_trip(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """track_request(read_session=True) reads the session in the lease's reply:
    a middleware needs no separate get."""
    sid = await _warm(store)
    await store.set_state(sid, {"cart": [1]})
    round_trips.reset()
    async with store.track_request(sid, read_session=True) as lease:
        assert round_trips.total == 1
        assert lease.session is not None
        assert lease.session.id == sid and lease.session.state == {"cart": [1]}
        assert lease.session.active_requests == 1


async def test_a_leased_request_that_reads_and_changes_state_is_two_round_trips(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """Taking the lease reads the session; the draft's changes ride on the lease's
    return: two round trips in all, one to one node each."""
    sid = await _warm(store)
    await store.set_state(sid, {"n": 1, "gone": True})
    round_trips.reset()
    async with store.track_request(sid, read_session=True) as lease:
        assert lease.draft is not None
        lease.draft["n"] = lease.draft["n"] + 1
        del lease.draft["gone"]
    assert round_trips.total == 2
    assert len(round_trips.by_node) == 1
    got = await store.get(sid)
    assert got.state == {"n": 2} and got.active_requests == 0


@pytest.mark.standalone
async def test_a_sweep_round_that_expired_users_sessions_makes_one_more_round_trip(
    store: SessionStore, round_trips: RoundTrips
) -> None:
    """A sweep round is one write of scripts; when it expired sessions that had a user,
    their user-index entries (other slots than the shard's) are dropped in one more."""
    await _warm(store)
    await sweep_store(store)  # loads the sweep script
    due = timedelta(milliseconds=1)

    async def overdue(count: int) -> bool:
        return (await store.counts()).overdue == count

    await store.create(idle_timeout=due)
    await eventually(lambda: overdue(1))
    round_trips.reset()
    assert (await sweep_store(store)).expired == 1
    assert round_trips.total == 1, "no user: the round alone"
    await store.create(user_id="ulf", idle_timeout=due)
    await store.create(user_id="una", idle_timeout=due)
    await eventually(lambda: overdue(2))
    round_trips.reset()
    assert (await sweep_store(store)).expired == 2
    assert round_trips.total == 2, "the round, then both users' entries in one pipeline"
