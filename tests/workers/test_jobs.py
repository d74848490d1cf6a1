"""The fleet's jobs run by a real arq worker (in this process, burst mode) on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from arq.connections import ArqRedis, create_pool
from arq.worker import Worker, create_worker

from sessionstore import (
    RedisClient,
    RedisSettings,
    SessionStore,
    Settings,
    WorkerState,
    create_client,
    list_workers,
)
from tests.bulk import all_events, backdate, create_many, expired_per_session
from tests.expiry_index import drop_entry
from tests.polling import eventually
from workers.settings import build_worker_settings

# arq 0.28's Worker.close() calls redis-py's deprecated Redis.close(); that warning is arq's.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

DUE = timedelta(milliseconds=1)
RunWorker = Callable[[Settings, list[str]], Awaitable[Worker]]


@pytest.fixture
async def run_burst(redis_url: str) -> AsyncIterator[RunWorker]:
    """Run a burst worker for `settings` after queueing the named jobs; it is closed after."""
    started: list[Worker] = []

    async def run(settings: Settings, jobs: list[str]) -> Worker:
        worker_settings = build_worker_settings(settings)
        pool: ArqRedis = await create_pool(worker_settings.redis_settings)  # type: ignore[attr-defined]
        try:
            for job in jobs:
                await pool.enqueue_job(job, _queue_name=worker_settings.queue_name)  # type: ignore[attr-defined]
        finally:
            await pool.aclose()
        worker = create_worker(worker_settings, burst=True, poll_delay=0, handle_signals=False)
        started.append(worker)
        await worker.run_check()
        await worker.close()
        return worker

    yield run
    for worker in started:
        await worker.close()


def _settings(store: SessionStore, url: str, queue_url: str, **extra: object) -> Settings:
    """Settings of a worker for `store`; cron ticks daily, so only the jobs a test
    queues (and the aggressive start-up pass) run in the burst."""
    daily = timedelta(days=1)
    fields: dict[str, object] = {
        "sweep_interval": daily,
        "aggressive_sweep_interval": daily,
        "repair_interval": daily,
        **extra,
    }
    return Settings(
        redis_url=url,
        queue_redis_url=queue_url,
        key_prefix=store.settings.key_prefix,
        shards=store.settings.shards,
        **fields,  # type: ignore[arg-type]
    )


async def _overdue(store: SessionStore, count: int) -> None:
    async def check() -> bool:
        return (await store.counts()).overdue == count

    await eventually(check, timeout=10)


async def test_the_sweep_job_expires_due_sessions_and_reports_it(
    store: SessionStore, backend_url: str, redis_url: str, run_burst: RunWorker
) -> None:
    """On a standalone or Cluster store (queue on a standalone Redis)."""
    due = await create_many(store, 60, idle_timeout=DUE)
    await create_many(store, 20)
    await _overdue(store, 60)
    settings = _settings(store, backend_url, redis_url, worker_id="job-test")

    worker = await run_burst(settings, [f"{store.keys.prefix}:sweep_due"])

    assert worker.jobs_complete >= 1 and worker.jobs_failed == 0
    assert expired_per_session(await all_events(store.redis, store)) == dict.fromkeys(due, 1)
    assert (await store.counts()).active == 20
    [info] = await list_workers(store.redis, store.keys, dead_after=timedelta(seconds=30))
    assert (info.id, info.state) == ("job-test", WorkerState.STOPPED)
    assert info.jobs_run >= 1
    sweep = info.reports["sweep"]
    assert isinstance(sweep, dict) and sweep["job"] == "sweep_due"


async def test_a_sweep_over_its_budget_queues_follow_ups_until_done(
    store: SessionStore, backend_url: str, redis_url: str, run_burst: RunWorker
) -> None:
    """A backlog larger than one run's budget is cleared by follow-up jobs, once each."""
    due = await create_many(store, 45, idle_timeout=DUE)
    await _overdue(store, 45)
    settings = _settings(store, backend_url, redis_url, sweep_batch_size=5, sweep_max_per_run=10)

    worker = await run_burst(settings, [f"{store.keys.prefix}:sweep_due"])

    assert worker.jobs_complete >= 5, "one job and at least four follow-ups"
    assert expired_per_session(await all_events(store.redis, store)) == dict.fromkeys(due, 1)
    assert (await store.counts()).overdue == 0


async def test_aggressive_mode_clears_long_overdue_sessions_at_start_up(
    store: SessionStore, backend_url: str, redis_url: str, run_burst: RunWorker
) -> None:
    """No job queued by hand: the start-up pass takes the sessions due long ago only."""
    old = await create_many(store, 8, idle_timeout=DUE)
    recent = await create_many(store, 4, idle_timeout=DUE)
    await _overdue(store, 12)
    await backdate(store, old, timedelta(hours=3))
    settings = _settings(store, backend_url, redis_url, aggressive_cleanup=True)

    await run_burst(settings, [])

    expired = expired_per_session(await all_events(store.redis, store))
    assert expired == dict.fromkeys(old, 1)
    assert (await store.counts()).overdue == len(recent)


async def test_the_repair_job_fixes_drift(
    store: SessionStore, redis: RedisClient, backend_url: str, redis_url: str, run_burst: RunWorker
) -> None:
    made = await store.create(user_id="pat")
    await drop_entry(redis, store, made.id)
    await redis.hdel(store.keys.user_index("pat"), "pat")
    settings = _settings(store, backend_url, redis_url, worker_id="repairer")

    await run_burst(settings, [f"{store.keys.prefix}:repair_indexes"])

    assert (await store.counts()).active == 1
    assert [s.id for s in await store.list_for_user("pat")] == [made.id]
    [info] = await list_workers(redis, store.keys, dead_after=timedelta(seconds=30))
    repair = info.reports["repair"]
    assert isinstance(repair, dict)
    assert (repair["expiry_added"], repair["user_index_added"], repair["fixed"]) == (1, 1, 2)


async def test_the_store_client_is_closed_at_shut_down(
    store: SessionStore, backend_url: str, redis_url: str, run_burst: RunWorker
) -> None:
    """Nothing is left connected after the worker stops (filterwarnings=error would also tell)."""
    settings = _settings(store, backend_url, redis_url)
    probe = create_client(RedisSettings.from_dsn(redis_url))
    try:
        before = len(await probe.client_list())
        await run_burst(settings, [f"{store.keys.prefix}:sweep_due"])
        after = len(await probe.client_list())
    finally:
        await probe.aclose()
    assert after <= before


async def test_the_job_loop_writes_the_heartbeat(
    store: SessionStore, backend_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`FleetWorker` beats from arq's loop: arq (the pinned range) calls ``record_health``
    on each pass, so the heartbeat hook runs while jobs are polled, and the worker
    writes its beat without a background task."""
    from arq.worker import get_kwargs

    from workers import heartbeat
    from workers.runner import FleetWorker, connect_queue

    passes: list[str] = []
    hook = heartbeat.beat_when_due

    async def counting(ctx: dict[str, object]) -> None:
        passes.append("pass")
        await hook(ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(heartbeat, "beat_when_due", counting)
    settings = _settings(
        store, backend_url, redis_url, heartbeat_interval=timedelta(milliseconds=1)
    )
    worker_settings = build_worker_settings(settings)
    queue_redis = worker_settings.queue_redis  # type: ignore[attr-defined]
    pool = await connect_queue(queue_redis, worker_settings.queue_name)  # type: ignore[attr-defined]
    kwargs = {**get_kwargs(worker_settings), "burst": True, "poll_delay": 0}
    worker = FleetWorker(**kwargs, redis_pool=pool, handle_signals=False)
    try:
        await worker.run_check()
        assert "heartbeat_task" not in worker.ctx, "no side task: the loop beats"
    finally:
        await worker.close()
    assert passes, "arq's loop called record_health"
    found = await list_workers(store.redis, store.keys, dead_after=timedelta(seconds=30))
    assert [w.state for w in found] == [WorkerState.STOPPED]
