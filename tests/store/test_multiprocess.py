"""Guarantees 2, 3 and 5 with several processes, not only tasks."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import pytest

from sessionstore import SessionClosed, SessionSettings, SessionStore, Tombstone
from tests.fleet import procs
from tests.polling import eventually

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

SPAWN = multiprocessing.get_context("spawn")


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=SPAWN)


async def test_no_lost_updates_across_processes(
    store: SessionStore, backend_url: str, session_settings: SessionSettings
) -> None:
    """4 processes x 150 compare-and-set increments end at exactly 600."""
    made = await store.create(state={"counter": 0})
    n, m = 4, 150
    with _pool(n) as pool:
        futures = [
            pool.submit(procs.increment, backend_url, session_settings, made.id, m)
            for _ in range(n)
        ]
        assert [f.result(timeout=240) for f in futures] == [m] * n
    final = await store.get(made.id)
    assert final.state["counter"] == n * m
    assert final.version == 1 + n * m, "each increment was exactly one committed write"


async def test_no_resurrection_while_writers_run(
    store: SessionStore, backend_url: str, session_settings: SessionSettings
) -> None:
    """Delete while 3 processes keep writing: every writer is refused from then on
    and the session stays deleted (no record reappears)."""
    made = await store.create()
    with _pool(3) as pool:
        futures = [
            pool.submit(procs.write_until_gone, backend_url, session_settings, made.id, f"w{i}")
            for i in range(3)
        ]

        async def writers_are_busy() -> bool:
            return (await store.get(made.id)).version > 30

        await eventually(writers_are_busy, timeout=60)
        assert await store.delete(made.id)
        assert [f.result(timeout=60) for f in futures] == ["closed"] * 3
    assert await store.redis.exists(store.session_keys(made.id).record) == 0
    tomb = await store.lookup(made.id)
    assert isinstance(tomb, Tombstone) and tomb.status.value == "closed"
    with pytest.raises(SessionClosed):
        await store.get(made.id)


async def test_ids_are_unique_over_100k_creates(redis_url: str, key_prefix: str) -> None:
    """100,000 creates from 4 processes: no duplicate id, and Redis counted 100,000."""
    settings = SessionSettings(key_prefix=key_prefix, idle_timeout=timedelta(minutes=5))
    per_process, n = 25_000, 4
    with _pool(n) as pool:
        futures = [
            pool.submit(procs.create_many, redis_url, settings, per_process) for _ in range(n)
        ]
        ids = [i for f in futures for i in f.result(timeout=600)]
    assert len(ids) == n * per_process
    assert len(set(ids)) == len(ids)
    from sessionstore import RedisSettings, create_client

    client = create_client(RedisSettings.from_dsn(redis_url))
    try:
        counts = await SessionStore(client, settings).counts()
    finally:
        await client.aclose()
    assert counts.totals["created"] == n * per_process
    assert counts.active == n * per_process


@pytest.mark.parametrize(
    ("changes", "limit"),
    [({"max_requests_per_session": 3}, 3), ({"max_requests_global": 2}, 2)],
    ids=["per-session", "global"],
)
async def test_limits_hold_across_processes(
    store: SessionStore,
    backend_url: str,
    session_settings: SessionSettings,
    changes: dict[str, int],
    limit: int,
) -> None:
    """6 processes race for leases on one session: exactly `limit` get one."""
    settings = session_settings.model_copy(update=changes)
    made = await store.create()
    manager = SPAWN.Manager()
    release = manager.Event()
    took = [manager.Event() for _ in range(6)]
    try:
        with _pool(6) as pool:
            futures = [
                pool.submit(procs.hold_a_request, backend_url, settings, made.id, release, t)
                for t in took
            ]

            async def all_tried() -> bool:
                return all(t.is_set() for t in took)

            await eventually(all_tried, timeout=120)
            assert (await store.get(made.id)).active_requests == limit
            release.set()
            granted = [f.result(timeout=60) for f in futures]
    finally:
        manager.shutdown()
    assert granted.count(True) == limit
    assert (await store.get(made.id)).active_requests == 0
