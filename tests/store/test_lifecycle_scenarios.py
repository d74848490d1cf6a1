"""The acceptance scenarios an MCP session manager must pass: create, persist state,
concurrent sessions, recover after a disconnect, expire then reissue.

"Another client" is a new Redis client and a new store object, as a second
server replica would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from sessionstore import (
    RedisSettings,
    SessionExpired,
    SessionSettings,
    SessionStatus,
    SessionStore,
    create_client,
)
from tests.polling import eventually


@pytest.fixture
async def replica_b(
    backend_url: str, session_settings: SessionSettings
) -> AsyncIterator[SessionStore]:
    """A second replica: its own connection pool and store object."""
    client = create_client(RedisSettings.from_dsn(backend_url))
    yield SessionStore(client, session_settings)
    await client.aclose()


async def test_should_create_new_session_successfully(store: SessionStore) -> None:
    """A new session has a string id and reads back active."""
    session = await store.create(user_id="test-client", metadata={"capabilities": ["tools"]})
    assert isinstance(session.id, str) and session.id
    got = await store.get(session.id)
    assert got.status is SessionStatus.ACTIVE
    assert got.metadata == {"capabilities": ["tools"]}


async def test_should_persist_session_state(store: SessionStore, replica_b: SessionStore) -> None:
    """State written through one replica is read back through another."""
    session = await store.create(user_id="test-client")
    await store.set_state(session.id, {"counter": 5, "lastTool": "list_nodes"})
    got = await replica_b.get(session.id)
    assert got.state == {"counter": 5, "lastTool": "list_nodes"}


async def test_should_handle_concurrent_sessions(store: SessionStore) -> None:
    """Five sessions created at once are unique, each usable and isolated."""
    sessions = await asyncio.gather(*(store.create(user_id=f"client-{i}") for i in range(5)))
    assert len({s.id for s in sessions}) == 5
    await asyncio.gather(*(store.set_state(s.id, {"n": i}) for i, s in enumerate(sessions)))
    got = await asyncio.gather(*(store.get(s.id) for s in sessions))
    assert [g.state for g in got] == [{"n": i} for i in range(5)]
    assert all(g.status is SessionStatus.ACTIVE for g in got)


async def test_should_recover_session_after_disconnect(
    store: SessionStore, backend_url: str, session_settings: SessionSettings
) -> None:
    """After the first client disconnects, a new client resumes the same session
    with its state intact."""
    session = await store.create(user_id="test-client")
    await store.set_state(session.id, {"counter": 5, "lastTool": "list_nodes"})
    await store.redis.aclose()  # the disconnect

    client = create_client(RedisSettings.from_dsn(backend_url))
    try:
        resumed = await SessionStore(client, session_settings).resume(session.id)
    finally:
        await client.aclose()
    assert resumed.id == session.id
    assert resumed.state == {"counter": 5, "lastTool": "list_nodes"}


async def test_should_handle_session_timeouts_gracefully(store: SessionStore) -> None:
    """An idle session expires; using it again issues a new one that links back."""
    session = await store.create(user_id="test-client", idle_timeout=timedelta(milliseconds=200))

    async def expired() -> bool:
        return (await store.lookup(session.id)).status is SessionStatus.EXPIRED

    await eventually(expired, timeout=5)
    with pytest.raises(SessionExpired):
        await store.get(session.id)
    new = await store.resume(session.id)
    assert new.id != session.id
    assert new.resumed_from == session.id
    assert new.status is SessionStatus.ACTIVE
