"""BreakerRegistry and guarded calls against a real Redis (standalone and Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from sessionstore import (
    BreakerOpen,
    BreakerSettings,
    InvalidInput,
    RedisClient,
    RedisSettings,
    create_client,
)
from sessionstore._redis import is_cluster
from sessionstore._scripts import load_all
from sessionstore.breaker import (
    AttemptKind,
    BreakerRegistry,
    BreakerSnapshot,
    BreakerState,
)
from tests.conftest import RoundTrips
from tests.polling import eventually

NAME = "imap:imap.example.com:993"
#: Settings under which no background round trip happens during a test.
QUIET = {"staleness_bound": timedelta(minutes=10), "record_flush_interval": timedelta(hours=1)}

Factory = Callable[..., Awaitable[BreakerRegistry]]


class UpstreamDown(Exception):
    pass


class BadPassword(Exception):
    pass


@pytest.fixture
async def registries(
    redis: RedisClient, key_prefix: str, backend_url: str
) -> AsyncIterator[Factory]:
    """Open registries on the test's Redis (own client per call if asked); all closed after."""
    opened: list[BreakerRegistry] = []
    clients: list[RedisClient] = []

    async def factory(*, own_client: bool = False, **kwargs: Any) -> BreakerRegistry:
        push = kwargs.pop("push", True)
        is_failure = kwargs.pop("is_failure", None)
        fields: dict[str, Any] = {"minimum_calls": 4, "record_flush_interval": timedelta(0)}
        fields.update(kwargs)
        client = redis
        if own_client:
            client = create_client(RedisSettings.from_dsn(backend_url))
            clients.append(client)
        registry = BreakerRegistry(
            client,
            BreakerSettings.model_validate(fields),
            key_prefix=key_prefix,
            push=push,
            is_failure=is_failure,
        )
        opened.append(await registry.open())
        if push:
            await eventually(_push_live(registry), timeout=10)
        return registry

    yield factory
    for registry in opened:
        await registry.aclose()
    for client in clients:
        await client.aclose()


def _push_live(registry: BreakerRegistry) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return registry.health().push_live

    return check


async def _warm(redis: RedisClient) -> None:
    """Scripts loaded and every node connected, as a server does at start-up."""
    await load_all(redis)
    if is_cluster(redis):
        await redis.ping(target_nodes=RedisCluster.ALL_NODES)  # type: ignore[call-arg]


async def _fail(registry: BreakerRegistry, times: int, name: str = NAME) -> None:
    breaker = await registry.get(name)
    for _ in range(times):
        with pytest.raises(UpstreamDown):
            async with breaker.guard():
                raise UpstreamDown


async def test_closed_guard_reads_nothing_and_records_inline_in_one_round_trip(
    registries: Factory, redis: RedisClient, round_trips: RoundTrips
) -> None:
    """With inline recording, each guarded call with the breaker closed costs exactly one
    round trip (the record script) and no read."""
    registry = await registries(staleness_bound=timedelta(minutes=10))
    breaker = await registry.get(NAME)
    await _warm(redis)
    async with breaker.guard():
        pass
    round_trips.reset()
    for n in range(1, 6):
        attempt = await breaker.acquire()
        assert round_trips.total == n - 1, "taking permission read nothing"
        await attempt.finish()
        assert round_trips.total == n, "recording cost one round trip"
    assert breaker.state is BreakerState.CLOSED


async def test_closed_guard_batches_outcomes_into_one_round_trip(
    registries: Factory, redis: RedisClient, round_trips: RoundTrips
) -> None:
    """With batching, 50 guarded calls cost no round trip; the flush costs exactly one,
    and the fleet-wide window holds all 50."""
    registry = await registries(**QUIET)
    breaker = await registry.get(NAME)
    await _warm(redis)
    round_trips.reset()
    for _ in range(50):
        async with breaker.guard():
            pass
    assert round_trips.total == 0
    await registry.flush()
    assert round_trips.total == 1
    status = await registry.admin.status(NAME)
    assert (status.calls, status.failures) == (50, 0)


async def test_failures_trip_the_breaker_and_calls_are_refused_locally(
    registries: Factory, redis: RedisClient, round_trips: RoundTrips
) -> None:
    """4 failed calls trip it; the next call is refused with the open time left, without
    a round trip."""
    registry = await registries(staleness_bound=timedelta(minutes=10))
    await _fail(registry, 4)
    breaker = await registry.get(NAME)
    assert breaker.state is BreakerState.OPEN
    round_trips.reset()
    with pytest.raises(BreakerOpen) as refused:
        async with breaker.guard():
            pytest.fail("an open breaker ran the block")
    assert refused.value.breaker == NAME
    assert 25 < refused.value.retry_after <= 30
    assert round_trips.total == 0


async def test_classifier_and_explicit_marks_decide_what_counts(registries: Factory) -> None:
    """Errors the classifier clears, ignore() and a nested BreakerOpen do not count;
    failure() counts without an exception."""
    registry = await registries(is_failure=lambda exc: not isinstance(exc, BadPassword))
    breaker = await registry.get(NAME)
    for _ in range(5):
        with pytest.raises(BadPassword):
            async with breaker.guard():
                raise BadPassword
        async with breaker.guard() as attempt:
            attempt.ignore()
        with pytest.raises(BreakerOpen):
            async with breaker.guard():
                raise BreakerOpen("other", 1.0)
    assert (await registry.admin.status(NAME)).calls == 0
    async with breaker.guard() as attempt:
        attempt.failure()
    status = await registry.admin.status(NAME)
    assert (status.calls, status.failures) == (1, 1)
    assert await breaker.call(asyncio.sleep, 0, "value") == "value"
    assert (await registry.admin.status(NAME)).calls == 2


async def test_a_slow_call_counts_as_slow(registries: Factory) -> None:
    """A call that took longer than slow_call_duration is counted slow (4 of 4 trips it)."""
    registry = await registries(
        slow_call_duration=timedelta(seconds=1), slow_call_rate_threshold=1.0
    )
    breaker = await registry.get(NAME)
    for _ in range(3):
        async with breaker.guard() as attempt:
            attempt.started -= 2.0  # this call "took" 2 s, without waiting 2 s
    status = await registry.admin.status(NAME)
    assert (status.calls, status.slow) == (3, 3)
    async with breaker.guard() as attempt:
        attempt.started -= 2.0
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot.cause == "slow_call_rate"


async def test_half_open_probe_success_closes_it(registries: Factory) -> None:
    """After the open duration the next guarded call is a probe; one successful probe
    (half_open_probes=1) closes the breaker."""
    registry = await registries(open_duration=timedelta(milliseconds=100), half_open_probes=1)
    await _fail(registry, 4)
    breaker = await registry.get(NAME)

    async def probing() -> bool:
        try:
            async with breaker.guard() as attempt:
                return attempt.is_probe
        except BreakerOpen:
            return False

    assert await eventually(probing, timeout=5)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot.cause == "probes_succeeded"


async def test_a_cancelled_probe_returns_its_lease_at_once(registries: Factory) -> None:
    """A task cancelled while probing gives its lease back before the cancellation
    completes, so the slot is free at once (not after probe_lease_ttl)."""
    registry = await registries(
        open_duration=timedelta(milliseconds=1),
        half_open_probes=1,
        probe_lease_ttl=timedelta(minutes=5),
    )
    await _fail(registry, 4)
    breaker = await registry.get(NAME)
    probing = asyncio.Event()
    attempts: list[AttemptKind] = []

    async def probe_forever() -> None:
        async with breaker.guard() as attempt:
            attempts.append(attempt.kind)
            probing.set()
            await asyncio.Event().wait()

    async def start_probe() -> bool:
        task = asyncio.create_task(probe_forever())
        waiter = asyncio.create_task(probing.wait())
        done, _ = await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:  # refused: still open for a moment
            assert isinstance(task.exception(), BreakerOpen)
            return False
        started.append(task)
        return True

    started: list[asyncio.Task[None]] = []
    await eventually(start_probe, timeout=5)
    assert attempts == [AttemptKind.PROBE]
    assert (await registry.admin.status(NAME)).probes_in_flight == 1
    started[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await started[0]
    assert (await registry.admin.status(NAME)).probes_in_flight == 0
    attempt = await breaker.acquire()
    assert attempt.is_probe, "the returned slot is available immediately"
    await attempt.cancel()


async def test_push_reaches_another_replica_without_polling(registries: Factory) -> None:
    """Replica B (own connection, polling every 5 min) sees A's force_open by push,
    then A's reset."""
    a = await registries(own_client=True)
    b = await registries(own_client=True, staleness_bound=timedelta(minutes=10))
    seen: list[tuple[BreakerState, BreakerState]] = []
    b.on_transition(lambda name, old, new: seen.append((old.state, new.state)))
    on_b = await b.get(NAME)
    await a.force_open(NAME, actor="tester", reason="isolate")

    async def isolated() -> bool:
        return on_b.state is BreakerState.FORCED_OPEN

    await eventually(isolated, timeout=5)
    with pytest.raises(BreakerOpen):
        await on_b.call(asyncio.sleep, 0)
    await a.reset(NAME, actor="tester")

    async def closed() -> bool:
        return on_b.state is BreakerState.CLOSED

    await eventually(closed, timeout=5)
    assert seen == [
        (BreakerState.CLOSED, BreakerState.FORCED_OPEN),
        (BreakerState.FORCED_OPEN, BreakerState.CLOSED),
    ]
    assert on_b.snapshot.actor == "tester"


async def test_polling_alone_keeps_a_replica_within_the_staleness_bound(
    registries: Factory,
) -> None:
    """Without pub/sub, replica B still learns A's transition within staleness_bound
    (200 ms) plus a generous margin for a loaded machine."""
    bound = timedelta(milliseconds=200)
    a = await registries(own_client=True)
    b = await registries(own_client=True, push=False, staleness_bound=bound)
    on_b = await b.get(NAME)
    await a.force_open(NAME, actor="tester", reason="isolate")

    async def isolated() -> bool:
        return on_b.state is BreakerState.FORCED_OPEN

    await eventually(isolated, timeout=bound.total_seconds() + 3.0)
    assert not b.health().push_live


async def test_bad_names_are_refused_before_any_io(
    registries: Factory, round_trips: RoundTrips
) -> None:
    """Names with braces, spaces or too long never reach Redis."""
    registry = await registries()
    round_trips.reset()
    for bad in ["", "a b", "x{y}", "z" * 300, "new\nline"]:
        with pytest.raises(InvalidInput):
            await registry.get(bad)
        with pytest.raises(InvalidInput):
            await registry.force_open(bad, actor="t", reason="r")
    with pytest.raises(InvalidInput):
        await registry.force_open(NAME, actor="t", reason="  ")
    with pytest.raises(InvalidInput):
        await registry.force_open(NAME, actor="t\x1b[31m", reason="r")
    assert round_trips.total == 0


async def test_registry_lifecycle(registries: Factory, redis: RedisClient) -> None:
    """A registry opens once; after close, get and guarded calls raise RuntimeError."""
    registry = await registries()
    breaker = await registry.get(NAME)
    with pytest.raises(RuntimeError):
        await registry.open()
    await registry.aclose()
    with pytest.raises(RuntimeError):
        await registry.get(NAME)
    with pytest.raises(RuntimeError):
        await breaker.acquire()


async def test_health_reports_policy_push_and_states(registries: Factory) -> None:
    """health() says Redis is reachable, which policy applies, that push is live, and each
    breaker's local state."""
    registry = await registries(redis_down_policy="fail_closed")
    await registry.get("b:1")
    await registry.force_open("b:2", actor="tester", reason="r")
    await registry.get("b:2")
    health = registry.health()
    assert health.redis_reachable and health.down_since is None
    assert health.policy == "fail_closed" and health.push_live
    assert health.breakers == {"b:1": BreakerState.CLOSED, "b:2": BreakerState.FORCED_OPEN}


async def test_an_older_snapshot_never_replaces_a_newer_one(registries: Factory) -> None:
    """A late push of an earlier state (delivered after a newer reply) is ignored."""
    registry = await registries()
    breaker = await registry.get(NAME)
    first = await registry.force_open(NAME, actor="t", reason="r")
    second = await registry.reset(NAME, actor="t")
    registry.apply(first)
    assert breaker.snapshot == second
    newer = BreakerSnapshot.model_validate(
        {**second.model_dump(), "now_ms": second.now_ms + 1, "state": "open", "gen": 9}
    )
    registry.apply(newer)
    assert breaker.snapshot.gen == 9
