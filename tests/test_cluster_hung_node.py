"""A hung Redis Cluster primary (SIGSTOP: connections stay open, nothing answers)
against a client made by `create_client`: commands inside a budget fail within about
the budget rather than the socket timeout, the client's outage latch then fails every
command at once, and the client serves again by itself after SIGCONT."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from sessionstore import (
    BackendUnavailable,
    RedisSettings,
    SessionSettings,
    SessionStore,
    command_budget,
    create_client,
)
from sessionstore.testing import LocalCluster, LocalRedis
from tests.polling import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: Far above the budget, so that a command that waits for it cannot hide in a loaded
#: machine's noise. Before the guards every command to the hung node waited for it.
SOCKET_TIMEOUT_SECONDS = 20.0
BUDGET_SECONDS = 0.5
#: As many budgeted pipelines at once as the client has connections per node: before
#: the nodes gave back the connections of cancelled pipelines, these used them all up.
MAX_CONNECTIONS = 4


async def _took(call: Callable[[], Awaitable[Any]]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call()
    except Exception as exc:  # the error is what the test looks at
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@asynccontextmanager
async def _private_cluster(replicas: int) -> AsyncIterator[tuple[LocalCluster, RedisCluster]]:
    """A private 3-master cluster (the shared one is never stopped) and a client of it."""
    with LocalCluster(3, replicas=replicas) as local:
        settings = RedisSettings.from_dsn(
            local.url,
            socket_timeout=timedelta(seconds=SOCKET_TIMEOUT_SECONDS),
            max_connections=MAX_CONNECTIONS,
        )
        client = create_client(settings)
        assert isinstance(client, RedisCluster)
        await client.initialize()
        try:
            yield local, client
        finally:
            await client.aclose()


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[LocalCluster, RedisCluster]]:
    """A private cluster of 3 masters and a client of it."""
    async with _private_cluster(replicas=0) as made:
        yield made


def _key_on(client: RedisCluster, node: LocalRedis, *, on: bool = True) -> str:
    """A key whose slot is (or, `on=False`, is not) served by `node`."""
    return next(
        key
        for key in (f"k{n}" for n in range(10_000))
        if (client.get_node_from_key(key).port == node.port) == on
    )


async def test_a_hung_primary_fails_fast_and_the_client_recovers(
    cluster: tuple[LocalCluster, RedisCluster],
) -> None:
    """SIGSTOP one primary: a command and MAX_CONNECTIONS concurrent pipelines to its
    slots, inside a budget, fail with a timeout far below the socket timeout and trip
    the latch once; while tripped, commands to any slot (the latch covers the whole
    client) fail at once with a connection error, even outside a budget. After SIGCONT
    the client serves the hung node's slots again by itself, pipelines included (no
    connection was lost to the cancelled ones)."""
    local, client = cluster
    victim = local.nodes[0]
    assert victim.process is not None
    hung_key, healthy_key = _key_on(client, victim), _key_on(client, victim, on=False)
    await client.set(hung_key, "kept")
    outage = client.outage  # type: ignore[attr-defined]

    def pipelined() -> Awaitable[list[Any]]:
        pipe = client.pipeline()
        pipe.get(hung_key)
        pipe.get(healthy_key)
        return pipe.execute()

    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        with command_budget(BUDGET_SECONDS):
            first, error = await _took(lambda: client.get(hung_key))
        assert isinstance(error, rex.TimeoutError), error
        assert first < SOCKET_TIMEOUT_SECONDS / 4, first
        assert outage.trips == 1 and outage.down

        with command_budget(BUDGET_SECONDS):
            fast = [await _took(pipelined) for _ in range(MAX_CONNECTIONS)]
            healthy = await _took(lambda: client.get(healthy_key))
        unbudgeted = await _took(lambda: client.get(hung_key))
        for took, error in [*fast, healthy, unbudgeted]:
            assert isinstance(error, rex.ConnectionError), error
            assert "not answering" in str(error)
            assert took < SOCKET_TIMEOUT_SECONDS / 4, took
        print(
            f"\nhung node: first command failed after {first:.3f}s (budget "
            f"{BUDGET_SECONDS}s, socket timeout {SOCKET_TIMEOUT_SECONDS}s); while "
            f"tripped, the slowest of {len(fast) + 2} failed after "
            f"{max(t for t, _ in [*fast, healthy, unbudgeted]):.4f}s"
        )
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)

    async def serves() -> bool:
        try:
            with command_budget(BUDGET_SECONDS):
                return await client.get(hung_key) == "kept"
        except rex.ConnectionError:
            return False

    await eventually(serves, timeout=SOCKET_TIMEOUT_SECONDS, interval=0.05)
    assert not outage.down and outage.trips == 1

    # Hang it again with pipelines in flight on every connection the node may have.
    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        with command_budget(BUDGET_SECONDS):
            results = await _gather_timed([pipelined for _ in range(MAX_CONNECTIONS)])
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)
    for took, error in results:
        assert isinstance(error, rex.TimeoutError), error
        assert took < SOCKET_TIMEOUT_SECONDS / 4, took
    assert outage.trips == 2

    async def pipelines_serve() -> bool:
        try:
            with command_budget(BUDGET_SECONDS):
                replies = [await pipelined() for _ in range(MAX_CONNECTIONS + 1)]
        except rex.ConnectionError:
            return False
        return all(reply[0] == "kept" for reply in replies)

    await eventually(pipelines_serve, timeout=SOCKET_TIMEOUT_SECONDS, interval=0.05)


async def _gather_timed(
    calls: list[Callable[[], Awaitable[Any]]],
) -> list[tuple[float, BaseException | None]]:
    return list(await asyncio.gather(*(_took(call) for call in calls)))


async def test_the_store_answers_backend_unavailable_for_a_hung_node(
    cluster: tuple[LocalCluster, RedisCluster],
) -> None:
    """Through the store (its batches, `near=` routing included): a read of a session
    on the hung primary's slots inside a budget raises BackendUnavailable far below the
    socket timeout, and the same read succeeds again by itself after SIGCONT."""
    local, client = cluster
    store = SessionStore(client, SessionSettings(key_prefix="hung"))
    victim = local.nodes[1]
    assert victim.process is not None
    for _ in range(200):
        made = await store.create(state={"kept": True})
        record = store.keys.session(made.id).record
        if client.get_node_from_key(record).port == victim.port:
            break
    else:
        pytest.fail("no session landed on the victim node")

    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        with command_budget(BUDGET_SECONDS):
            took, error = await _took(lambda: store.get(made.id))
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)
    assert isinstance(error, BackendUnavailable), error
    assert took < SOCKET_TIMEOUT_SECONDS / 4, took

    async def serves() -> bool:
        try:
            with command_budget(BUDGET_SECONDS):
                return (await store.get(made.id)).state == {"kept": True}
        except BackendUnavailable:
            return False

    await eventually(serves, timeout=SOCKET_TIMEOUT_SECONDS, interval=0.05)


async def test_a_hung_primary_that_dies_clears_the_latch(
    cluster: tuple[LocalCluster, RedisCluster],
) -> None:
    """A hung primary that is then killed refuses connections: that fails fast by
    itself, so the latch clears by itself (a replica taking over would then be found
    by redis-py's slot-map refresh), and a command to the dead node's slots fails with
    the connection error, not the latch's, far below the socket timeout."""
    local, client = cluster
    victim = local.nodes[2]
    assert victim.process is not None
    hung_key = _key_on(client, victim)
    await client.set(hung_key, "kept")
    outage = client.outage  # type: ignore[attr-defined]
    os.kill(victim.process.pid, signal.SIGSTOP)
    with command_budget(BUDGET_SECONDS):
        _, error = await _took(lambda: client.get(hung_key))
    assert isinstance(error, rex.TimeoutError), error
    assert outage.down
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait()

    async def cleared() -> bool:
        return not outage.down

    await eventually(cleared, timeout=SOCKET_TIMEOUT_SECONDS)
    took, error = await _took(lambda: client.get(hung_key))
    assert isinstance(error, rex.ConnectionError), error
    assert "not answering" not in str(error)
    assert took < SOCKET_TIMEOUT_SECONDS / 4, took


@pytest.fixture
async def replicated() -> AsyncIterator[tuple[LocalCluster, RedisCluster]]:
    """A private cluster of 3 masters with a replica each, and a client of it."""
    async with _private_cluster(replicas=1) as made:
        yield made


async def test_a_hung_primary_failed_over_clears_the_latch(
    replicated: tuple[LocalCluster, RedisCluster],
) -> None:
    """A primary that hangs for good (the first startup node, too) and whose replica the
    cluster promotes: the latch, tripped by a budgeted command to its slots, clears by
    itself while the old primary is still stopped, and the client serves its slots from
    the promoted replica, data included. Its probes learnt a fresh slot map each time
    without keeping the connections of the node objects they replaced."""
    local, client = replicated
    victim = local.nodes[0]
    assert victim.process is not None
    promoted = next(
        node for node in local.nodes if local.master_of(node) is victim and node is not victim
    )
    healthy = local.nodes[1]
    hung_key = _key_on(client, victim)
    await client.set(hung_key, "kept")
    # The replica has the write before its primary hangs.
    assert (
        await client.execute_command(
            "WAIT", 1, 5000, target_nodes=client.get_node_from_key(hung_key)
        )
        == 1
    )
    outage = client.outage  # type: ignore[attr-defined]
    checker = aioredis.Redis(port=healthy.port, decode_responses=True)

    async def failed_over() -> bool:
        lines = (await checker.execute_command("CLUSTER", "NODES")).splitlines()
        flags = {line.split()[1].split("@")[0]: line.split()[2] for line in lines}
        return (
            "fail" in flags[f"127.0.0.1:{victim.port}"]
            and "master" in flags[f"127.0.0.1:{promoted.port}"]
        )

    async def serves() -> bool:
        try:
            with command_budget(BUDGET_SECONDS):
                return await client.get(hung_key) == "kept"
        except (rex.ConnectionError, rex.TimeoutError):
            return False

    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        with command_budget(BUDGET_SECONDS):
            _, error = await _took(lambda: client.get(hung_key))
        assert isinstance(error, rex.TimeoutError), error
        assert outage.down
        await eventually(failed_over, timeout=60, interval=0.1)
        promoted_seen = time.monotonic()
        await eventually(serves, timeout=30, interval=0.05)
        print(
            f"\nfailover: served from the promoted replica "
            f"{time.monotonic() - promoted_seen:.3f}s after the cluster showed it as master"
        )
        assert victim.process.poll() is None  # still there, still stopped
        assert not outage.down
        assert client.get_node_from_key(hung_key).port == promoted.port

        async def few_connections() -> bool:
            clients = (await checker.execute_command("CLIENT", "LIST")).splitlines()
            return len(clients) <= MAX_CONNECTIONS + 1  # the checker's own

        await eventually(few_connections, timeout=10)
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)
        await checker.aclose()
