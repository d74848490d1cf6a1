"""``sessionstore worker`` rides out a Redis outage (workers/runner.py): a real worker
process, a private Redis stopped and started again on its port."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sessionstore import (
    RedisSettings,
    SessionSettings,
    SessionStore,
    Tombstone,
    WorkerState,
    create_client,
    list_workers,
)
from sessionstore.testing import ChildProcess, LocalRedis
from tests.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

PREFIX = "outage"
DEAD_AFTER = timedelta(seconds=2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    """A Redis of this test alone (AOF on, so it comes back with its data)."""
    server = LocalRedis(directory=str(tmp_path / "redis"), appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def worker(redis_server: LocalRedis, tmp_path: Path) -> Iterator[ChildProcess]:
    env = {
        **os.environ,
        "SESSIONSTORE_REDIS_URL": redis_server.url,
        "SESSIONSTORE_QUEUE_REDIS_URL": "",
        "SESSIONSTORE_KEY_PREFIX": PREFIX,
        "SESSIONSTORE_SHARDS": "2",
        "SESSIONSTORE_WORKER_ID": "rider",
        "SESSIONSTORE_HEARTBEAT_INTERVAL": "0.5",
        "SESSIONSTORE_WORKER_DEAD_AFTER": "2",
        "SESSIONSTORE_AGGRESSIVE_CLEANUP": "false",
        "SESSIONSTORE_SWEEP_INTERVAL": "1",
        "SESSIONSTORE_REPAIR_INTERVAL": "86400",
    }
    process = ChildProcess(
        "worker",
        [sys.executable, "-m", "sessionstore", "worker"],
        log_path=tmp_path / "worker.log",
        env=env,
    ).start()
    yield process
    process.kill()


@pytest.fixture
async def stores() -> AsyncIterator[list[SessionStore]]:
    """Stores opened by the test, closed at its end."""
    opened: list[SessionStore] = []
    yield opened
    for store in opened:
        await store.redis.aclose()


def open_store(url: str, opened: list[SessionStore]) -> SessionStore:
    """A store on a fresh client (one from before a restart would fail its first call)."""
    settings = SessionSettings(key_prefix=PREFIX, shards=2)
    opened.append(SessionStore(create_client(RedisSettings.from_dsn(url)), settings))
    return opened[-1]


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")


async def _live(store: SessionStore) -> bool:
    found = await list_workers(store.redis, store.keys, dead_after=DEAD_AFTER)
    return [(w.id, w.state) for w in found] == [("rider", WorkerState.LIVE)]


async def _swept_by_the_worker(store: SessionStore) -> str:
    due = await store.create(idle_timeout=timedelta(milliseconds=1))

    async def expired() -> bool:
        found = await store.lookup(due.id)
        return isinstance(found, Tombstone) and found.reason == "idle"

    await eventually(expired, timeout=60, interval=0.1)
    return due.id


async def test_a_worker_waits_out_a_redis_outage_and_works_again(
    redis_server: LocalRedis,
    worker: ChildProcess,
    stores: list[SessionStore],
    tmp_path: Path,
) -> None:
    """Redis stopped under a running worker: the process stays up and says it lost Redis;
    Redis back on its port: the worker beats again and sweeps; SIGTERM during a second
    outage stops it at once with exit 0."""
    before = open_store(redis_server.url, stores)
    await eventually(lambda: _live(before), timeout=60, interval=0.1)
    await _swept_by_the_worker(before)

    redis_server.stop(remove=False)

    async def lost() -> bool:
        assert worker.alive(), log_of(tmp_path)
        return "lost Redis" in log_of(tmp_path)

    await eventually(lost, timeout=30, interval=0.1)
    redis_server.start()
    after = open_store(redis_server.url, stores)

    async def back() -> bool:
        return "Redis is back" in log_of(tmp_path) and await _live(after)

    await eventually(back, timeout=60, interval=0.1)
    await _swept_by_the_worker(after)

    redis_server.stop(remove=False)
    await eventually(lambda: _count_lost(tmp_path, 2), timeout=30, interval=0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, log_of(tmp_path)


async def _count_lost(tmp_path: Path, times: int) -> bool:
    return log_of(tmp_path).count("lost Redis") >= times
