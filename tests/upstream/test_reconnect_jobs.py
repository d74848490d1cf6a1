"""Reconnect jobs on arq: one per connection fleet-wide, backoff, breaker, session end.

Workers run in burst mode (they stop when the queue is empty); backoff waits
are zero in tests (`set_testing`), so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis, create_pool
from arq.connections import RedisSettings as ArqRedisSettings
from arq.jobs import Job
from arq.worker import Worker

from sessionstore import SessionStore
from sessionstore.exceptions import UpstreamUnavailable
from sessionstore.upstream import (
    ArqReconnects,
    Credentials,
    ImapClient,
    Reconnector,
    UpstreamRecords,
    UpstreamSettings,
    UpstreamSpec,
    UpstreamState,
)
from sessionstore.upstream.imap import ImapConnector
from tests.upstream.conftest import ENV_PASSWORD_NAME, PoolFactory, imap_spec
from tests.upstream.dovecot import Dovecot
from tests.upstream.fakes import FakeConnector, FakeGate, FakeGates, spec
from workers.reconnect import reconnect_function

ArqFactory = Callable[[], Awaitable[ArqRedis]]

# arq 0.28's Worker.close() calls redis-py's deprecated close(); nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

SETTINGS = UpstreamSettings.for_profile(
    "stable",
    call_timeout=timedelta(seconds=5),
    connect_timeout=timedelta(seconds=5),
).model_copy(
    update={
        "reconnect_backoff": UpstreamSettings.for_profile("stable").reconnect_backoff.model_copy(
            update={"max_attempts": 3}
        )
    }
)


@pytest.fixture
async def arq_pools(redis_url: str) -> AsyncIterator[ArqFactory]:
    """Make arq pools on the test Redis (a worker closes its own; the rest are closed here)."""
    made: list[ArqRedis] = []

    async def make() -> ArqRedis:
        pool = await create_pool(ArqRedisSettings.from_dsn(redis_url))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.aclose()


@pytest.fixture
def queue(key_prefix: str) -> str:
    """This test's own arq queue."""
    return f"{key_prefix}:queue"


async def run_burst(
    make: ArqFactory, queue: str, prefix: str, reconnector: Reconnector, **options: Any
) -> Worker:
    """Run a burst-mode worker with the reconnect job until the queue is empty."""
    worker = Worker(
        functions=[reconnect_function(prefix, SETTINGS)],
        redis_pool=await make(),
        queue_name=queue,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
        ctx={"reconnector": reconnector},
        **options,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


def imap_reconnector(store: SessionStore, credentials: Credentials, **kwargs: Any) -> Reconnector:
    """A reconnector with the real IMAP connector."""
    return Reconnector(
        UpstreamRecords(store),
        connectors=[ImapConnector.from_settings(SETTINGS)],
        credentials=credentials,
        settings=SETTINGS,
        **kwargs,
    )


async def queued_reconnect(
    store: SessionStore,
    credentials: Credentials,
    jobs: ArqReconnects,
    upstream: UpstreamSpec | None = None,
) -> tuple[str, UpstreamRecords]:
    """A session whose upstream record is `reconnecting` (one failed attempt, as after a
    give-up) with its reconnect job queued."""
    session = await store.create()
    records = UpstreamRecords(store)
    stored = credentials.seal(ref=f"env:{ENV_PASSWORD_NAME}")
    await records.register(session.id, upstream or spec(), stored)
    await records.update(session.id, "mail", state=UpstreamState.RECONNECTING, attempts="incr")
    assert await jobs.schedule(session.id, "mail", delay=0)
    return session.id, records


def fake_reconnector(
    records: UpstreamRecords, credentials: Credentials, breaker: str | None = None
) -> tuple[Reconnector, FakeConnector, FakeGates]:
    """A reconnector over a fake upstream and, when `breaker` names a state, a fake breaker."""
    gates, connector = FakeGates(), FakeConnector()
    if breaker is not None:
        gates.gates[spec().breaker_name] = FakeGate(state=breaker, wait=30.0)
    reconnector = Reconnector(
        records, connectors=[connector], credentials=credentials, settings=SETTINGS, gates=gates
    )
    return reconnector, connector, gates


@pytest.mark.standalone
async def test_one_job_per_connection_however_many_replicas_ask(
    arq_pools: ArqFactory, queue: str, store: SessionStore
) -> None:
    """Five concurrent requests from two replicas queue one job; another upstream gets its own."""
    session = await store.create()
    replicas = [ArqReconnects(await arq_pools(), store.keys, queue_name=queue)] * 2
    asks = [r.schedule(session.id, "mail", delay=5.0) for r in replicas for _ in range(5)]
    assert sorted(await asyncio.gather(*asks)) == [False] * 9 + [True]
    assert await replicas[0].schedule(session.id, "backup", delay=5.0)
    check = await arq_pools()
    assert await check.zcard(queue) == 2


@pytest.mark.standalone
async def test_job_reconnects_once_the_server_is_back(
    dovecot: Dovecot,
    arq_pools: ArqFactory,
    queue: str,
    key_prefix: str,
    store: SessionStore,
    credentials: Credentials,
    make_pool: PoolFactory,
) -> None:
    """Server down: the call gives up and queues a job; server back: the job reconnects."""
    jobs = ArqReconnects(await arq_pools(), store.keys, queue_name=queue)
    imap = ImapConnector.from_settings(SETTINGS)
    async with make_pool(connectors=[imap], settings=SETTINGS, reconnects=jobs) as pool:
        session = await store.create()
        await pool.register(
            session.id, imap_spec(dovecot), credential_ref=f"env:{ENV_PASSWORD_NAME}"
        )
        client = ImapClient(pool, session.id)
        dovecot.stop()
        with pytest.raises(UpstreamUnavailable):
            await client.get_email_count()
        assert await (await arq_pools()).zcard(queue) == 1
        dovecot.start()
        worker = await run_burst(arq_pools, queue, key_prefix, imap_reconnector(store, credentials))
        assert (worker.jobs_complete, worker.jobs_retried, worker.jobs_failed) == (1, 0, 0)
        record = await pool.records.get(session.id, "mail")
        assert record is not None and record.state is UpstreamState.CONNECTED
        assert record.attempts == 0 and record.response_time_ms is not None
        assert await client.get_email_count() == 3


@pytest.mark.standalone
async def test_job_backs_off_then_gives_up_while_the_server_stays_down(
    dovecot: Dovecot,
    arq_pools: ArqFactory,
    queue: str,
    key_prefix: str,
    store: SessionStore,
    credentials: Credentials,
) -> None:
    """Each failed attempt re-queues the same job; after the last one the record is failed."""
    jobs = ArqReconnects(await arq_pools(), store.keys, queue_name=queue)
    session_id, records = await queued_reconnect(store, credentials, jobs, imap_spec(dovecot))
    dovecot.stop()
    worker = await run_burst(arq_pools, queue, key_prefix, imap_reconnector(store, credentials))
    assert (worker.jobs_retried, worker.jobs_complete) == (1, 1)  # attempts 2 and 3 of 3
    record = await records.get(session_id, "mail")
    assert record is not None and record.state is UpstreamState.FAILED
    assert record.attempts == 3 and record.last_error is not None
    assert record.last_error.startswith("refused") and record.next_attempt_at is None
    assert await (await arq_pools()).zcard(queue) == 0


@pytest.mark.standalone
async def test_open_breaker_defers_the_job_without_touching_the_upstream(
    arq_pools: ArqFactory,
    queue: str,
    key_prefix: str,
    store: SessionStore,
    credentials: Credentials,
) -> None:
    """Breaker open: the job re-queues itself for when it may half-open; no connect."""
    jobs = ArqReconnects(await arq_pools(), store.keys, queue_name=queue)
    session_id, records = await queued_reconnect(store, credentials, jobs)
    reconnector, connector, _ = fake_reconnector(records, credentials, breaker="open")
    before_ms = time.time() * 1000
    worker = await run_burst(arq_pools, queue, key_prefix, reconnector, max_burst_jobs=1)
    assert worker.jobs_retried == 1 and connector.opened == 0
    check = await arq_pools()
    job_id = store.keys.reconnect_job_id(session_id, "mail")
    score = await check.zscore(queue, job_id)
    assert score is not None and score >= before_ms + 29_000  # deferred ~30 s
    assert not await jobs.schedule(session_id, "mail", delay=0)  # still one job
    record = await records.get(session_id, "mail")
    assert record is not None and record.next_attempt_at is not None
    assert record.state is UpstreamState.RECONNECTING and record.attempts == 1


@pytest.mark.standalone
async def test_half_open_probe_is_taken_by_the_job(
    arq_pools: ArqFactory,
    queue: str,
    key_prefix: str,
    store: SessionStore,
    credentials: Credentials,
) -> None:
    """Half-open: the worker's attempt is the probe, and its success is reported."""
    jobs = ArqReconnects(await arq_pools(), store.keys, queue_name=queue)
    session_id, records = await queued_reconnect(store, credentials, jobs)
    reconnector, connector, gates = fake_reconnector(records, credentials, breaker="half_open")
    gate = gates.gates[spec().breaker_name]
    await run_burst(arq_pools, queue, key_prefix, reconnector)
    assert gate.admitted == 1 and [str(o) for o in gate.outcomes] == ["success"]
    assert connector.opened == 1 and connector.connections[0].closed
    record = await records.get(session_id, "mail")
    assert record is not None and record.state is UpstreamState.CONNECTED


@pytest.mark.standalone
async def test_a_job_for_an_ended_session_does_nothing(
    arq_pools: ArqFactory,
    queue: str,
    key_prefix: str,
    store: SessionStore,
    credentials: Credentials,
) -> None:
    """Sessions that end take their connections along: the job connects to nothing."""
    jobs = ArqReconnects(await arq_pools(), store.keys, queue_name=queue)
    session_id, records = await queued_reconnect(store, credentials, jobs)
    await store.expire(session_id)
    reconnector, connector, _ = fake_reconnector(records, credentials)
    worker = await run_burst(arq_pools, queue, key_prefix, reconnector)
    assert worker.jobs_complete == 1 and connector.opened == 0
    assert (await reconnector.attempt(session_id, "mail")).status == "gone"


@pytest.mark.standalone
async def test_job_arguments_hide_the_session_id(
    arq_pools: ArqFactory, queue: str, store: SessionStore
) -> None:
    """The queued job shows neither the session id in its id nor in its logged arguments."""
    session = await store.create()
    jobs = ArqReconnects(await arq_pools(), store.keys, queue_name=queue)
    assert await jobs.schedule(session.id, "mail", delay=60)
    check = await arq_pools()
    [raw_id] = await check.zrange(queue, 0, -1)
    job_id = raw_id.decode()
    assert session.id not in job_id
    info = await Job(job_id, check).info()
    assert info is not None and session.id not in repr(info.args)
    assert info.args[0].get_secret_value() == session.id
