"""Redis down means a fast, clear error, and recovery by itself."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from sessionstore import (
    BackendUnavailable,
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
)
from sessionstore.testing import LocalRedis
from tests.polling import eventually

#: A hang would blow through this; a fast failure is far inside it.
HANG_GUARD = 10.0


@pytest.fixture
async def private() -> AsyncIterator[tuple[LocalRedis, SessionStore]]:
    """A Redis of this test's own, so it can be stopped, paused and restarted."""
    server = LocalRedis().start()
    settings = RedisSettings.from_dsn(
        server.url,
        connect_timeout=timedelta(milliseconds=500),
        socket_timeout=timedelta(milliseconds=500),
    )
    client = create_client(settings)
    try:
        yield server, SessionStore(client, SessionSettings(key_prefix="down"))
    finally:
        await client.aclose()
        server.stop()


async def test_stopped_redis_fails_fast_and_recovers(
    private: tuple[LocalRedis, SessionStore],
) -> None:
    """Every kind of call raises BackendUnavailable while Redis is stopped; the same
    store works again once Redis is back on its port, with no reconnect by hand."""
    server, store = private
    made = await store.create(user_id="u1")
    server.stop(remove=False)
    calls = [
        store.get(made.id),
        store.create(),
        store.set_state(made.id, {"a": 1}),
        store.counts(),
        store.lock(made.id).acquire(blocking=False),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable) as caught:
            await asyncio.wait_for(call, HANG_GUARD)
        assert "Redis" in str(caught.value)
    with pytest.raises(BackendUnavailable):
        async with store.track_request(made.id):
            pass  # pragma: no cover

    server.start()  # same port, data gone (no persistence): the store just works

    async def works_again() -> bool:
        try:
            await store.create()
        except BackendUnavailable:
            return False
        return True

    await eventually(works_again, timeout=HANG_GUARD)
    assert (await store.counts()).totals["created"] == 1


async def test_unresponsive_redis_times_out_instead_of_hanging(
    private: tuple[LocalRedis, SessionStore],
) -> None:
    """A paused server (SIGSTOP) answers nothing: the socket timeout turns that into
    BackendUnavailable, and calls work again after SIGCONT."""
    server, store = private
    made = await store.create()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BackendUnavailable):
            await asyncio.wait_for(store.get(made.id), HANG_GUARD)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)

    async def answers() -> bool:
        try:
            return (await store.get(made.id)).id == made.id
        except BackendUnavailable:
            return False

    await eventually(answers, timeout=HANG_GUARD)


async def test_sessions_survive_a_restart_with_append_only_persistence() -> None:
    """With AOF on (as deploy/redis.conf has it), a restarted Redis still has the
    sessions, their state, their deadlines and the tombstones."""
    server = LocalRedis(appendonly=True, extra=("--appendfsync", "always")).start()
    client = create_client(RedisSettings.from_dsn(server.url))
    store = SessionStore(client, SessionSettings(key_prefix="aof"))
    try:
        kept = await store.create(user_id="jo", state={"cart": [1]})
        ended = await store.create()
        await store.delete(ended.id)
        server.stop(remove=False)
        server.start()

        async def back() -> bool:
            try:
                return (await store.get(kept.id)).state == {"cart": [1]}
            except BackendUnavailable:
                return False

        await eventually(back, timeout=HANG_GUARD)
        assert await client.pttl(store.session_keys(kept.id).record) > 0
        assert (await store.lookup(ended.id)).status.value == "closed"
    finally:
        await client.aclose()
        server.stop()
