"""The store through Redis Sentinel, across a failover."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from sessionstore import (
    BackendUnavailable,
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
)
from sessionstore.testing import LocalSentinel
from tests.polling import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentinel() -> Iterator[LocalSentinel]:
    with LocalSentinel() as deployment:
        yield deployment


async def test_store_works_through_sentinel_and_survives_failover(
    sentinel: LocalSentinel,
) -> None:
    """Sessions written before a failover are read after it from the promoted
    replica, and writes resume by themselves once the client finds the new master."""
    client = create_client(RedisSettings.from_dsn(sentinel.url))
    store = SessionStore(client, SessionSettings(key_prefix="sentinel"))
    try:
        made = await store.create(user_id="ivy", state={"n": 1})
        old_master = sentinel.master_port()
        # Let the replica catch up before promoting it (replication is asynchronous).
        sync = redis.Redis(port=old_master)

        async def replica_caught_up() -> bool:
            return bool(await asyncio.to_thread(sync.execute_command, "WAIT", 1, 1000) == 1)

        try:
            await eventually(replica_caught_up, timeout=30)
        finally:
            sync.close()
        sentinel.failover()

        async def promoted() -> bool:
            return await asyncio.to_thread(sentinel.master_port) != old_master

        await eventually(promoted, timeout=30)

        async def writable_again() -> bool:
            try:
                await store.set_state(made.id, {"n": 2})
            except BackendUnavailable:
                return False
            return True

        await eventually(writable_again, timeout=30, interval=0.1)
        got = await store.get(made.id)
        assert got.state == {"n": 2} and got.user_id == "ivy"
        assert sentinel.master_port() == sentinel.replica.port
    finally:
        await client.aclose()
