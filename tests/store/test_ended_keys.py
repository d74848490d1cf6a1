"""Which keys ending a session drops, and which it looks up (MONITOR on a real Redis,
standalone and Cluster): a session's upstream records and MCP event streams go with it,
and a session that never had any gets none of those keys looked up (in a large keyspace
every lookup of a missing key is a cache miss)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from mcp_types import JSONRPCNotification

from sessionstore import RedisClient, Session, SessionKeys, SessionStore, sweep_store
from sessionstore.mcp import RedisEventStore
from sessionstore.upstream import StoredCredential, UpstreamRecords, UpstreamSpec
from tests.bulk import backdate
from tests.monitor import commands_run, deletes, naming
from tests.store.lease_fields import lease_deadline

ENDINGS = ["delete", "expire", "sweep", "resume", "rotate"]
SPEC = UpstreamSpec(name="mail", host="imap.example.com", port=993, username="alice@example.com")
NOTE = JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={})


async def _end(store: SessionStore, session_id: str, ending: str) -> str:
    """End the session the way `ending` says (sweep and resume: once it is overdue);
    the id it goes on under (rotate, resume), else ''."""
    if ending in ("sweep", "resume"):
        await backdate(store, [session_id], timedelta(seconds=1))
    if ending == "sweep":
        assert (await sweep_store(store)).expired == 1
        return ""
    after = await getattr(store, ending)(session_id)
    return after.id if isinstance(after, Session) else ""


def _extras(keys: SessionKeys) -> tuple[str, str, str]:
    return keys.upstreams, keys.mcp_events, keys.mcp_standalone


@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_session_without_upstreams_or_streams_has_none_looked_up(
    store: SessionStore, redis: RedisClient, ending: str
) -> None:
    """A session that never had upstream records or MCP events carries no field for them,
    and ending it names none of those keys: the DEL drops the record alone."""
    session = await store.create(user_id="alice")
    keys = store.session_keys(session.id)
    assert "extras" not in await redis.hgetall(keys.record)

    async with commands_run(redis) as seen:
        await _end(store, session.id, ending)

    assert naming(seen, *_extras(keys)) == []
    if ending != "rotate":
        assert deletes(seen, keys.record) == [[keys.record]]
    assert not await redis.exists(keys.record)


@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_session_with_upstreams_and_streams_drops_them(
    store: SessionStore, redis: RedisClient, ending: str
) -> None:
    """Upstream records and both MCP event streams mark the record, and every way of
    ending the session drops them (rotate moves the records to the new id)."""
    session = await store.create()
    keys = store.session_keys(session.id)
    await UpstreamRecords(store).register(session.id, SPEC, StoredCredential(ref="env:X"))
    events = RedisEventStore(store, session.id)
    await events.store_event("1", NOTE)
    await events.store_event("_GET_stream", NOTE)
    assert await redis.exists(*_extras(keys)) == 3
    assert await redis.hget(keys.record, "extras") == "1"

    async with commands_run(redis) as seen:
        successor = await _end(store, session.id, ending)

    assert await redis.exists(keys.record, *_extras(keys)) == 0
    if ending == "rotate":
        assert await redis.exists(store.session_keys(successor).upstreams) == 1
        assert await redis.hget(store.session_keys(successor).record, "extras") == "1"
    else:
        assert deletes(seen, keys.record) == [[keys.record, *_extras(keys)]]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_held_leases_go_with_the_record(
    store: SessionStore, redis: RedisClient, ending: str
) -> None:
    """Request and connection leases are fields of the record: ending a session that
    holds some drops the record alone (no lease key is named), and rotate moves them
    with the record to the new id."""
    session = await store.create()
    keys = store.session_keys(session.id)
    request = await store.leases.take(session.id)
    conn = await store.leases.take(session.id, "conns")

    async with commands_run(redis) as seen:
        successor = await _end(store, session.id, ending)

    assert not await redis.exists(keys.record)
    if ending == "rotate":
        moved = store.session_keys(successor).record
        for lease in (request, conn):
            assert await lease_deadline(redis, moved, lease) is not None
    else:
        assert deletes(seen, keys.record) == [[keys.record]]
