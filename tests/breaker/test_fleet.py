"""Breakers across several processes: the window is fleet-wide, half-open admits a fixed
number of probes across the fleet, a killed prober's lease is reclaimed, and a replica
sees another's transition within the staleness bound."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import pytest

from sessionstore import BreakerSettings, KeySpace, RedisClient, RedisSettings, create_client
from sessionstore.breaker import BreakerAdmin, BreakerState
from sessionstore.breaker._policy import WindowCounts
from sessionstore.breaker._remote import BreakerScripts, PendingRecord
from tests.breaker import procs
from tests.polling import eventually

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

SPAWN = multiprocessing.get_context("spawn")
NAME = "imap:imap.example.com:993"
#: Room for a loaded 2-core machine on top of the staleness bound.
MARGIN = 5.0


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[RedisClient]:
    redis = create_client(RedisSettings.from_dsn(backend_url))
    yield redis
    await redis.aclose()


async def _trip(scripts: BreakerScripts) -> None:
    _, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(50, 50, 0)))
    assert snap.state is BreakerState.OPEN


async def _wait_open_elapsed(scripts: BreakerScripts) -> None:
    async def elapsed() -> bool:
        status = await scripts.read(NAME)
        return status.now_ms >= status.open_until_ms

    await eventually(elapsed, timeout=10)


async def test_failures_from_three_processes_trip_the_shared_window(
    client: RedisClient, backend_url: str, key_prefix: str
) -> None:
    """3 processes fail 4 calls each at once; no process reaches minimum_calls (10) alone,
    yet the shared window trips, exactly once."""
    settings = BreakerSettings(
        minimum_calls=10,
        failure_rate_threshold=0.5,
        record_flush_interval=timedelta(0),
        open_duration=timedelta(minutes=5),
    )
    manager = SPAWN.Manager()
    try:
        start = manager.Barrier(3)
        with ProcessPoolExecutor(3, mp_context=SPAWN) as pool:
            futures = [
                pool.submit(procs.fail_calls, backend_url, key_prefix, settings, NAME, 4, start)
                for _ in range(3)
            ]
            results = [f.result(timeout=120) for f in futures]
    finally:
        manager.shutdown()
    admitted = [r["admitted"] for r in results]
    assert all(a < settings.minimum_calls for a in admitted)
    assert sum(admitted) >= settings.minimum_calls
    assert sum(r["admitted"] + r["refused"] for r in results) == 12
    admin = BreakerAdmin(client, settings, key_prefix=key_prefix)
    status = await admin.status(NAME)
    assert (status.state, status.cause, status.trips) == (BreakerState.OPEN, "failure_rate", 1)
    opened = [e for e in await admin.history(NAME) if e.fields.get("to") == "open"]
    assert len(opened) == 1


async def test_half_open_admits_exactly_the_configured_probes_across_processes(
    client: RedisClient, backend_url: str, key_prefix: str
) -> None:
    """3 processes ask for 4 permissions each at once in half-open: exactly
    half_open_probes (2) of the 12 are probes, fleet-wide."""
    settings = BreakerSettings(
        minimum_calls=1,
        open_duration=timedelta(milliseconds=300),
        half_open_probes=2,
        probe_lease_ttl=timedelta(minutes=2),
        record_flush_interval=timedelta(0),
    )
    scripts = BreakerScripts(client, KeySpace(key_prefix, 1), settings)
    await _trip(scripts)
    manager = SPAWN.Manager()
    try:
        go = manager.Event()
        with ProcessPoolExecutor(3, mp_context=SPAWN) as pool:
            futures = [
                pool.submit(procs.race_for_probes, backend_url, key_prefix, settings, NAME, 4, go)
                for _ in range(3)
            ]
            await _wait_open_elapsed(scripts)
            go.set()
            granted = [f.result(timeout=120) for f in futures]
    finally:
        manager.shutdown()
    assert sum(granted) == settings.half_open_probes
    status = await scripts.read(NAME)
    assert status.state is BreakerState.HALF_OPEN
    assert status.probes_in_flight == settings.half_open_probes


async def test_a_killed_probers_lease_is_reclaimed(
    client: RedisClient, backend_url: str, key_prefix: str
) -> None:
    """A process holding the only probe lease is SIGKILLed: the slot stays taken until the
    lease deadline, then the next acquire anywhere gets it (event probe_reclaimed)."""
    settings = BreakerSettings(
        minimum_calls=1,
        open_duration=timedelta(milliseconds=1),
        half_open_probes=1,
        # Long enough for the "still held" check below on a loaded machine.
        probe_lease_ttl=timedelta(seconds=3),
        record_flush_interval=timedelta(0),
    )
    scripts = BreakerScripts(client, KeySpace(key_prefix, 1), settings)
    await _trip(scripts)
    manager = SPAWN.Manager()
    try:
        holding = manager.Event()
        prober = SPAWN.Process(
            target=procs.hold_a_probe, args=(backend_url, key_prefix, settings, NAME, holding)
        )
        prober.start()
        try:
            assert await asyncio.to_thread(holding.wait, 60), "the child never got its probe"
            assert (await scripts.acquire(NAME, "parent-early")).verdict == "refused"
        finally:
            prober.kill()  # SIGKILL: no cleanup runs in the child
            await asyncio.to_thread(prober.join, 30)
        assert prober.exitcode == -9
    finally:
        manager.shutdown()

    async def reclaimed() -> bool:
        return (await scripts.acquire(NAME, "parent")).verdict == "probe"

    await eventually(reclaimed, timeout=settings.probe_lease_ttl.total_seconds() + MARGIN)
    kinds = [e.kind for e in await scripts.events(NAME, 20)]
    assert "probe_reclaimed" in kinds


@pytest.mark.parametrize("push", [True, False], ids=["push", "poll-only"])
async def test_a_replica_sees_another_processs_transition_within_the_bound(
    client: RedisClient, backend_url: str, key_prefix: str, push: bool
) -> None:
    """A replica in another process observes this process's force_open within
    staleness_bound (plus a generous margin), by push and by polling alone."""
    bound = timedelta(milliseconds=500)
    settings = BreakerSettings(staleness_bound=bound, record_flush_interval=timedelta(0))
    admin = BreakerAdmin(client, settings, key_prefix=key_prefix)
    deadline = bound.total_seconds() + MARGIN
    manager = SPAWN.Manager()
    try:
        ready = manager.Event()
        with ProcessPoolExecutor(1, mp_context=SPAWN) as pool:
            future = pool.submit(
                procs.observe,
                backend_url,
                key_prefix,
                settings,
                NAME,
                "forced_open",
                deadline,
                ready,
                push,
            )
            assert await asyncio.to_thread(ready.wait, 120), "the replica never got ready"
            made_at = time.monotonic()
            await admin.force_open(NAME, actor="tester", reason="propagation test")
            seen_at = future.result(timeout=deadline + 60)
    finally:
        manager.shutdown()
    assert seen_at is not None, f"not observed within {deadline:.1f}s"
    # The delay itself is measured and printed by benchmarks/breaker_overhead.py.
    assert seen_at >= made_at
