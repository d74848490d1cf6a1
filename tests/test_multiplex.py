"""The multiplexed connection: many callers on one socket, each gets its own replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis.exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from sessionstore import RedisSettings, create_client
from sessionstore._redis import CommandSender, RedisClient, command_budget, command_sender
from tests.conftest import RoundTrips
from tests.polling import eventually

pytestmark = pytest.mark.standalone

#: A script that keeps Redis busy long enough for a caller to give up on it.
_SPIN = "for i = 1, 20000000 do end return 'slow'"
#: The socket timeout of clients whose tests hold Redis on purpose (a script, a
#: BLPOP): one no loaded machine reaches, where the default 2 s could drop the
#: connection under the test.
_PATIENT = timedelta(minutes=1)


def _sender(redis: RedisClient) -> CommandSender:
    send = command_sender(redis)
    assert send is not None
    return send


async def test_concurrent_calls_each_get_their_own_replies(
    redis: RedisClient, key_prefix: str
) -> None:
    """200 calls at once, each writing and reading its own key, all on one socket:
    every call gets the replies to its own commands."""
    send = _sender(redis)

    async def one(i: int) -> list[object]:
        key = f"{key_prefix}:m:{i}"
        return await send([("SET", key, f"v{i}"), ("GET", key), ("ECHO", str(i))])

    replies = await asyncio.gather(*(one(i) for i in range(200)))
    assert replies == [[True, f"v{i}", str(i)] for i in range(200)]


async def test_an_error_reply_comes_back_in_its_place(redis: RedisClient, key_prefix: str) -> None:
    """An error reply is returned as the exception in its command's place; the
    commands around it still get their replies."""
    send = _sender(redis)
    key = f"{key_prefix}:m"
    first, wrong, last = await send([("SET", key, "1"), ("HGET", key, "x"), ("GET", key)])
    assert first is True and last == "1"
    assert isinstance(wrong, rex.ResponseError) and "WRONGTYPE" in str(wrong)
    assert (await send([("TIME",)]))[0][0] > 0  # reply callbacks apply as in redis-py


@pytest.fixture
async def patient_redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client with the `_PATIENT` socket timeout."""
    client = create_client(RedisSettings.from_dsn(redis_url, socket_timeout=_PATIENT))
    yield client
    await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_in_step(
    patient_redis: RedisClient, key_prefix: str
) -> None:
    """A caller cancelled while Redis still works on its command does not shift the
    replies: the next caller gets its own, not the abandoned one's. (Redis "works" on
    a BLPOP that this test releases once the caller gave up and the next call is
    written behind it: no timing decides which happens first.)"""
    redis, key = patient_redis, f"{key_prefix}:m:release"
    send = _sender(redis)
    (mine,) = await send([("CLIENT", "ID")])
    abandoned = asyncio.create_task(send([("BLPOP", key, 0)]))
    await eventually(lambda: _client_of(redis, mine, lambda c: c["cmd"] == "blpop"))
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    after = asyncio.create_task(send([("ECHO", "mine")]))
    # Written, and held by Redis behind the blocked BLPOP.
    await eventually(lambda: _client_of(redis, mine, lambda c: int(c["qbuf"]) > 0))
    assert await redis.rpush(key, "released") == 1
    assert await after == ["mine"]
    assert await send([("ECHO", "next")]) == ["next"]
    assert await redis.exists(key) == 0  # the abandoned BLPOP did take the value


async def _client_of(
    redis: RedisClient, client_id: int, matches: Callable[[dict[str, str]], bool]
) -> bool:
    """Whether Redis's CLIENT LIST entry of `client_id` (asked on a pooled connection,
    not the multiplexed one) `matches`."""
    line = await redis.execute_command("CLIENT", "LIST", "ID", client_id)
    text = line.decode() if isinstance(line, bytes) else str(line)
    fields = dict(field.split("=", 1) for field in text.split())
    return matches(fields)


async def test_calls_of_one_loop_iteration_go_out_in_one_write(
    redis: RedisClient, round_trips: RoundTrips
) -> None:
    """Calls that start in the same loop iteration cost two socket writes, however
    many they are: the first finds nothing in flight and writes at once, the others
    are queued behind it and written together; each still gets its own replies."""
    send = _sender(redis)
    await send([("PING",)])
    round_trips.reset()
    calls = [asyncio.create_task(send([("ECHO", str(i)), ("ECHO", "x")])) for i in range(6)]
    assert await asyncio.gather(*calls) == [[str(i), "x"] for i in range(6)]
    assert round_trips.total == 2
    assert await send([("ECHO", "alone")]) == ["alone"]
    assert round_trips.total == 3  # a lone call: one write of its own


async def test_calls_answered_by_one_read_write_together_again(
    patient_redis: RedisClient, round_trips: RoundTrips
) -> None:
    """Calls whose replies came in one read resume in the same loop iteration, so
    their next writes go out as one, the first included: it finds nothing in flight,
    but the others are about to write. (The three first calls are queued behind a
    long script, so Redis answers them in one write.)"""
    send = _sender(patient_redis)
    await send([("PING",)])
    round_trips.reset()

    async def twice(i: int) -> list[object]:
        return [*(await send([("ECHO", f"a{i}")])), *(await send([("ECHO", f"b{i}")]))]

    busy = asyncio.create_task(send([("EVAL", _SPIN, 0)]))
    calls = [asyncio.create_task(twice(i)) for i in range(3)]
    assert await asyncio.gather(*calls) == [[f"a{i}", f"b{i}"] for i in range(3)]
    assert await busy == ["slow"]
    assert round_trips.total == 3  # the script, the three first calls, the three next


async def test_a_failed_write_fails_every_call_queued_for_it(
    redis: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the one write of the queued calls fails, every call on the connection
    fails with ``ConnectionError`` (the one already written too: nobody knows which
    reply is whose), and the next call works on a new connection."""
    send = _sender(redis)
    (before,) = await send([("CLIENT", "ID")])
    original = AbstractConnection.send_packed_command

    async def failing(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        if b"boom" in command:
            raise rex.ConnectionError("write failed")
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", failing)
    calls = [asyncio.create_task(send([("ECHO", word)])) for word in ("first", "boom", "last")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, rex.ConnectionError) for result in results), results
    (after,) = await send([("CLIENT", "ID")])
    assert after != before


async def test_a_queued_caller_that_gives_up_leaves_the_others_in_step(
    redis: RedisClient,
) -> None:
    """A caller cancelled after its commands were queued but before they were written
    still has them written (its replies are read and dropped), so the calls around
    it, and the next ones, get their own replies."""
    send = _sender(redis)
    await send([("PING",)])
    calls = [asyncio.create_task(send([("ECHO", str(i))])) for i in range(3)]
    # Runs after the three calls queued, before the flush at the next iteration.
    asyncio.get_running_loop().call_soon(calls[1].cancel)
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == ["0"] and results[2] == ["2"]
    assert isinstance(results[1], asyncio.CancelledError)
    assert await send([("ECHO", "next")]) == ["next"]


async def test_a_killed_connection_is_replaced_by_the_next_call(
    redis: RedisClient, redis_url: str
) -> None:
    """When Redis drops the shared connection (CLIENT KILL, a restart), calls work
    again on a new connection without anything done by hand."""
    send = _sender(redis)
    (before,) = await send([("CLIENT", "ID")])
    other: Redis = Redis.from_url(redis_url)
    try:
        assert await other.execute_command("CLIENT", "KILL", "ID", before) == 1
    finally:
        await other.aclose()

    async def reconnected() -> bool:
        try:
            (after,) = await send([("CLIENT", "ID")])
        except rex.ConnectionError:
            return False
        return bool(after != before)

    await eventually(reconnected, timeout=5.0)


async def test_no_more_calls_in_flight_than_the_pool_allows(redis_url: str) -> None:
    """While Redis is busy (a long script), calls beyond ``max_connections`` wait for a
    slot instead of being written, as they would wait for a pooled connection: a Redis
    that hangs is handed no more work than the pool would have let through. Once it
    answers, every call gets its own reply."""
    client = create_client(
        RedisSettings.from_dsn(redis_url, max_connections=2, socket_timeout=_PATIENT)
    )
    try:
        send = _sender(client)
        await send([("PING",)])
        busy = asyncio.create_task(send([("EVAL", _SPIN, 0)]))
        echoes = [asyncio.create_task(send([("ECHO", str(i))])) for i in range(5)]
        link = client.multiplexed._link  # type: ignore[union-attr]
        assert link is not None

        async def queued() -> bool:
            return len(link.waiting) == 2 and len(client.multiplexed._slot_waiters) == 4  # type: ignore[union-attr]

        await eventually(queued, timeout=5.0, interval=0.001)
        assert await busy == ["slow"]
        assert [await echo for echo in echoes] == [[str(i)] for i in range(5)]
    finally:
        await client.aclose()


async def test_a_budget_that_runs_out_waiting_for_the_reply_fails_the_call_alone(
    redis_url: str,
) -> None:
    """A call whose budget runs out while Redis works on it fails with the budget's
    timeout and trips the latch; its reply, when it comes, is dropped, so the next
    call on the connection gets its own."""
    client = create_client(RedisSettings.from_dsn(redis_url, socket_timeout=_PATIENT))
    try:
        send = _sender(client)
        await send([("PING",)])
        link = client.multiplexed._link  # type: ignore[union-attr]
        with command_budget(0.001), pytest.raises(rex.TimeoutError) as failed:
            await send([("EVAL", _SPIN, 0)])
        assert str(failed.value) == "no answer from Redis within 0.001s"
        assert client.outage.trips == 1  # type: ignore[union-attr]
        # Past the latch: the same connection, in step with Redis again.
        multiplexed = client.multiplexed  # type: ignore[union-attr]
        assert await multiplexed.execute([("ECHO", "mine")]) == ["mine"]
        assert multiplexed._link is link
        assert await multiplexed.execute([("ECHO", "next")], 5.0) == ["next"]
    finally:
        await client.aclose()


async def test_a_budget_that_runs_out_waiting_for_a_slot_fails_the_call_alone(
    redis_url: str,
) -> None:
    """The wait for an in-flight slot counts in the budget: a call that cannot get one
    in time fails with the budget's timeout, passes no slot on, and the call that held
    the slot still gets its reply."""
    async with _one_slot_held(redis_url) as (multiplexed, busy):
        link = multiplexed._link
        with pytest.raises(rex.TimeoutError) as failed:
            await multiplexed.execute([("ECHO", "late")], 0.001)
        assert str(failed.value) == "no answer from Redis within 0.001s"
        assert link is not None and len(link.waiting) == 1  # never written
        assert await busy == ["slow"]
        assert await multiplexed.execute([("ECHO", "after")], 5.0) == ["after"]
        assert multiplexed._link is link


async def test_a_caller_cancelled_within_its_budget_is_cancelled_not_timed_out(
    redis_url: str,
) -> None:
    """A budgeted call whose task is cancelled while it waits for a slot ends
    cancelled (the budget takes back only its own cancellation), and the call that
    held the slot still gets its reply."""
    async with _one_slot_held(redis_url) as (multiplexed, busy):
        waiting = asyncio.create_task(multiplexed.execute([("ECHO", "never")], 5.0))
        await eventually(
            lambda: _true(len(multiplexed._slot_waiters) == 1), timeout=5.0, interval=0.001
        )
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await busy == ["slow"]
        assert await multiplexed.execute([("ECHO", "after")], 5.0) == ["after"]


@asynccontextmanager
async def _one_slot_held(
    redis_url: str,
) -> AsyncIterator[tuple[Any, asyncio.Task[list[Any]]]]:
    """A multiplexed connection allowed one call in flight, and a slow call holding that
    one slot (the task of the call, still waiting for its reply)."""
    client = create_client(
        RedisSettings.from_dsn(redis_url, max_connections=1, socket_timeout=_PATIENT)
    )
    try:
        multiplexed = client.multiplexed  # type: ignore[union-attr]
        await multiplexed.execute([("PING",)])
        busy = asyncio.create_task(multiplexed.execute([("EVAL", _SPIN, 0)]))
        link = multiplexed._link
        assert link is not None
        await eventually(lambda: _true(len(link.waiting) == 1), timeout=5.0, interval=0.001)
        yield multiplexed, busy
    finally:
        await client.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_a_connection_idle_past_the_health_check_interval_is_replaced(
    redis: RedisClient,
) -> None:
    """A connection that sat idle longer than the client's health-check interval may
    have been cut silently (a firewall, a load balancer): the next call connects anew
    instead of writing into it. (The idle time is set back by hand: no waiting.)"""
    send = _sender(redis)
    (first,) = await send([("CLIENT", "ID")])
    link = redis.multiplexed._link  # type: ignore[union-attr]
    assert link is not None
    (again,) = await send([("CLIENT", "ID")])
    assert again == first
    link.last_used -= 31  # create_client's health-check interval is 30 s
    (fresh,) = await send([("CLIENT", "ID")])
    assert fresh != first
