"""`RedisEventStore` on a real Redis (standalone and cluster): one bounded stream per
session, in the session's hash tag, dropped when the session ends; foreign and malformed
event ids replay nothing."""

from __future__ import annotations

import pytest
from mcp_types import JSONRPCNotification, JSONRPCResponse

from sessionstore import RedisClient, SessionStore
from sessionstore.mcp import RedisEventStore
from sessionstore.mcp._event_store import CURRENT_REQUEST, RequestWrites
from sessionstore.mcp._sdk import EventMessage
from tests.monitor import commands_run, naming


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


def response(request_id: int) -> JSONRPCResponse:
    return JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"of": request_id})


async def test_a_response_rides_with_the_lease_return_and_every_id_resumes(
    store: SessionStore, redis: RedisClient
) -> None:
    """Under a request lease the priming event is not written and the response is written
    by the lease's return; a resume from the priming id, from a stored event's id, or from
    an id a resume handed out gets the rest once, in order; from the response's id, nothing."""
    session = await store.create()
    events = RedisEventStore(store, session.id)
    key = store.keys.session(session.id).mcp_events
    tracked = store.track_request(session.id, read_session=True)
    lease = await tracked.__aenter__()
    assert lease.session is not None
    since = int(lease.session.last_activity.timestamp() * 1000)
    bound = CURRENT_REQUEST.set(RequestWrites(since, tracked.riders))
    try:
        priming = await events.store_event("3", None)
        assert await redis.xlen(key) == 0
        progress = await events.store_event("3", note(1))
        final = await events.store_event("3", response(3))
    finally:
        CURRENT_REQUEST.reset(bound)
    assert await redis.xlen(key) == 1  # the response waits for the lease's return
    await tracked.__aexit__(None, None, None)
    assert await redis.xlen(key) == 2
    assert await store.track_request(session.id).__aenter__()  # the lease was returned too
    whole = await replayed(events, priming)
    assert [m.message for m in whole] == [note(1), response(3)]
    assert [m.message for m in await replayed(events, progress)] == [response(3)]
    assert [m.message for m in await replayed(events, whole[0].event_id or "")] == [response(3)]
    assert await replayed(events, final) == []


async def test_a_reused_request_id_replays_only_its_own_request(store: SessionStore) -> None:
    """A client that numbers every request 1: a resume from the second request's priming
    event gets the second request's events, none of the first's."""
    session = await store.create()
    events = RedisEventStore(store, session.id)
    await events.store_event("1", None)
    await events.store_event("1", note(1))
    await events.store_event("1", response(1))
    second = await events.store_event("1", None)
    await events.store_event("1", note(2))
    await events.store_event("1", JSONRPCResponse(jsonrpc="2.0", id=1, result={"again": True}))
    got = [m.message for m in await replayed(events, second)]
    assert got == [note(2), JSONRPCResponse(jsonrpc="2.0", id=1, result={"again": True})]


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
    foreign_priming = await other.store_event("2", None)
    for bad in (foreign, forged, foreign_priming, "garbage", "", "a" * 5000):
        assert await replayed(own, bad) == [], bad
    for bad in (own_first + "x", own_first.replace(".r.", ".p."), own_first.replace(".r.", ".f.")):
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


async def test_only_a_stores_first_event_marks_the_record(
    store: SessionStore, redis: RedisClient
) -> None:
    """A store's first event of the session sets the record's `extras` (so ending the
    session drops the streams); its later events are plain XADD + PEXPIRE, and a store on
    another replica marks once more."""
    session = await store.create()
    record = store.keys.session(session.id).record
    assert not await redis.hexists(record, "extras")
    async with commands_run(redis) as seen:
        events = RedisEventStore(store, session.id)
        for n in range(3):
            await events.store_event("1", note(n))
        await events.store_event("_GET_stream", note(3))
        await RedisEventStore(store, session.id).store_event("_GET_stream", note(4))
    marks = [words for words in naming(seen, record) if words[0] == "HSET"]
    assert marks == [["HSET", record, "extras", "1"]] * 2
    assert len([words for words in seen if words[0] == "XADD"]) == 5
    assert await redis.hget(record, "extras") == "1"


async def test_a_first_event_riding_with_the_lease_return_marks_the_record(
    store: SessionStore, redis: RedisClient
) -> None:
    """A response that is the store's first event rides with the lease's return and
    marks the record there."""
    session = await store.create()
    events = RedisEventStore(store, session.id)
    tracked = store.track_request(session.id, read_session=True)
    await tracked.__aenter__()
    bound = CURRENT_REQUEST.set(RequestWrites(0, tracked.riders))
    try:
        await events.store_event("3", None)
        await events.store_event("3", response(3))
    finally:
        CURRENT_REQUEST.reset(bound)
    record = store.keys.session(session.id).record
    assert not await redis.hexists(record, "extras")  # waits for the lease's return
    await tracked.__aexit__(None, None, None)
    assert await redis.hget(record, "extras") == "1"
    assert await redis.xlen(store.keys.session(session.id).mcp_events) == 1


async def test_an_event_of_an_ended_session_creates_no_record(
    store: SessionStore, redis: RedisClient
) -> None:
    """The mark is written only into an existing record: an event stored after the session
    ended leaves no record behind (its stream is left to its TTL)."""
    session = await store.create()
    await store.delete(session.id)
    await RedisEventStore(store, session.id).store_event("1", note(1))
    keys = store.keys.session(session.id)
    assert not await redis.exists(keys.record)
    assert await redis.pttl(keys.mcp_events) > 0
