"""Per-worker heartbeats on a real Redis: live, dead and stopped workers."""

from __future__ import annotations

from datetime import timedelta

from sessionstore import (
    Heartbeat,
    RedisClient,
    SessionStore,
    WorkerState,
    list_workers,
    publish_heartbeat,
)

TTL = timedelta(minutes=5)
DEAD_AFTER = timedelta(seconds=30)


async def test_a_beating_worker_is_listed_live_with_what_it_did(store: SessionStore) -> None:
    """Id, host, pid, start time, jobs run and the last sweep come back as written."""
    beat = Heartbeat(worker_id="w-1", host="box", pid=4242, queue="q")
    first = await publish_heartbeat(store.redis, store.keys, beat, ttl=TTL)
    beat.jobs_run = 7
    beat.reports["sweep"] = {"expired": 12, "still_due": 0}
    await publish_heartbeat(store.redis, store.keys, beat, ttl=TTL)

    [worker] = await list_workers(store.redis, store.keys, dead_after=DEAD_AFTER)

    assert (worker.id, worker.state, worker.host, worker.pid) == ("w-1", "live", "box", 4242)
    assert worker.started_at == first and worker.last_beat >= first
    assert worker.jobs_run == 7
    assert worker.reports["sweep"] == {"expired": 12, "still_due": 0}
    ttl = await store.redis.pttl(store.keys.worker("w-1"))
    assert 0 < ttl <= TTL.total_seconds() * 1000


async def test_a_silent_worker_is_flagged_dead(store: SessionStore, redis: RedisClient) -> None:
    """A last beat older than the bound (a killed worker) reads as dead; others stay live."""
    for worker_id in ("quiet", "busy"):
        beat = Heartbeat(worker_id=worker_id, host="box", pid=1, queue="q")
        await publish_heartbeat(redis, store.keys, beat, ttl=TTL)
    seconds, _ = await redis.time()
    await redis.hset(store.keys.worker("quiet"), "last_beat", (int(seconds) - 120) * 1000)

    workers = {w.id: w for w in await list_workers(redis, store.keys, dead_after=DEAD_AFTER)}

    assert workers["quiet"].state is WorkerState.DEAD
    assert workers["quiet"].silent_for >= timedelta(seconds=119)
    assert workers["busy"].state is WorkerState.LIVE


async def test_a_worker_whose_record_lapsed_is_dead_from_the_index(
    store: SessionStore, redis: RedisClient
) -> None:
    """Only the index entry is left: the worker is still listed, as dead."""
    beat = Heartbeat(worker_id="gone", host="box", pid=1, queue="q")
    await publish_heartbeat(redis, store.keys, beat, ttl=TTL)
    await redis.delete(store.keys.worker("gone"))
    [worker] = await list_workers(redis, store.keys, dead_after=DEAD_AFTER)
    assert (worker.id, worker.state, worker.host) == ("gone", WorkerState.DEAD, None)


async def test_a_cleanly_stopped_worker_says_so(store: SessionStore) -> None:
    beat = Heartbeat(worker_id="w-2", host="box", pid=1, queue="q")
    await publish_heartbeat(store.redis, store.keys, beat, ttl=TTL)
    beat.stopped = True
    await publish_heartbeat(store.redis, store.keys, beat, ttl=TTL)
    [worker] = await list_workers(store.redis, store.keys, dead_after=DEAD_AFTER)
    assert worker.state is WorkerState.STOPPED


async def test_the_index_forgets_workers_older_than_the_ttl(
    store: SessionStore, redis: RedisClient
) -> None:
    """Index entries older than the heartbeat TTL are pruned: the index stays bounded."""
    await redis.zadd(store.keys.worker_index(), {"ancient": 1})
    beat = Heartbeat(worker_id="now", host="box", pid=1, queue="q")
    await publish_heartbeat(redis, store.keys, beat, ttl=TTL)
    assert await redis.zrange(store.keys.worker_index(), 0, -1) == ["now"]
    assert 0 < await redis.pttl(store.keys.worker_index()) <= TTL.total_seconds() * 1000


async def test_a_restarted_worker_starts_its_record_over(store: SessionStore) -> None:
    """A new process reusing a worker id gets a fresh record (start time, no old reports)."""
    old = Heartbeat(worker_id="w-3", host="box", pid=1, queue="q", stopped=True)
    old.reports["repair"] = {"fixed": 3}
    first = await publish_heartbeat(store.redis, store.keys, old, ttl=TTL)
    new = Heartbeat(worker_id="w-3", host="box", pid=2, queue="q")
    await publish_heartbeat(store.redis, store.keys, new, ttl=TTL)
    [worker] = await list_workers(store.redis, store.keys, dead_after=DEAD_AFTER)
    assert (worker.state, worker.pid, worker.reports) == (WorkerState.LIVE, 2, {})
    assert worker.started_at is not None and worker.started_at >= first
