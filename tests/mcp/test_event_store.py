"""`RedisEventStore` on a real Redis (standalone and cluster): one bounded stream per
session, in the session's hash tag, dropped when the session ends; foreign and malformed
event ids replay nothing."""

from __future__ import annotations

import pytest
from mcp_types import JSONRPCNotification, JSONRPCResponse

from sessionstore import RedisClient, SessionStore
from sessionstore.mcp import RedisEventStore
from sessionstore.mcp._sdk import EventMessage


def note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"n": n})


async def replayed(events: RedisEventStore, last: str) -> list[EventMessage]:
    got: list[EventMessage] = []

    async def collect(message: EventMessage) -> None:
        got.append(message)

    assert await events.replay_events_after(last, collect) is None
    return got


async def test_replay_sends_the_stream_after_the_id_up_to_its_final_response(
    store: SessionStore,
) -> None:
    """Events of the same SSE stream after the given id, in order, up to and including the
    request's response; other streams' events and priming events are not sent."""
    session = await store.create()
    events = RedisEventStore(store, session.id)
    priming = await events.store_event("7", None)
    first = await events.store_event("7", note(1))
    await events.store_event("_GET_stream", note(99))
    await events.store_event("7", note(2))
    await events.store_event("7", JSONRPCResponse(jsonrpc="2.0", id=7, result={}))
    got = await replayed(events, first)
    assert [m.message.model_dump(exclude_none=True).get("params") for m in got] == [{"n": 2}, None]
    assert isinstance(got[-1].message, JSONRPCResponse)
    assert len(await replayed(events, priming)) == 3


async def test_an_event_id_of_another_session_or_malformed_replays_nothing(
    store: SessionStore,
) -> None:
    """Another session's event id (even one whose entry id exists in this stream) and
    malformed ids replay nothing."""
    mine, theirs = await store.create(), await store.create()
    own = RedisEventStore(store, mine.id)
    other = RedisEventStore(store, theirs.id)
    own_first = await own.store_event("1", note(1))
    await own.store_event("1", note(2))
    foreign = await other.store_event("1", note(3))
    forged = foreign.split(".", 1)[0] + "." + own_first.split(".", 1)[1]
    for bad in (foreign, forged, "garbage", "", "a" * 5000, own_first + "x"):
        assert await replayed(own, bad) == [], bad


async def test_the_stream_is_bounded_has_a_ttl_and_shares_the_session_slot(
    store: SessionStore, redis: RedisClient
) -> None:
    """The stream is capped near max_events, expires with the sessions' lifetime, and
    its key carries the session's hash tag."""
    session = await store.create()
    events = RedisEventStore(store, session.id, max_events=10)
    for n in range(300):
        await events.store_event("1", note(n))
    key = store.keys.session(session.id).mcp_events
    assert await redis.xlen(key) < 300
    assert 0 < await redis.pttl(key) <= store.settings.absolute_lifetime.total_seconds() * 1000
    assert key.startswith(store.keys.session(session.id).record.split("}")[0] + "}")


@pytest.mark.parametrize("ending", ["delete", "expire", "rotate"])
async def test_ending_the_session_drops_its_stream(
    store: SessionStore, redis: RedisClient, ending: str
) -> None:
    """The scripts that delete, expire or rotate the session drop its event streams."""
    session = await store.create()
    events = RedisEventStore(store, session.id)
    await events.store_event("1", note(1))
    await events.store_event("_GET_stream", note(2))
    keys = store.keys.session(session.id)
    assert await redis.exists(keys.mcp_events, keys.mcp_standalone) == 2
    await getattr(store, ending)(session.id)
    assert await redis.exists(keys.mcp_events, keys.mcp_standalone) == 0
