"""Real worker processes (``sessionstore worker``, ``python -m arq workers.WorkerSettings``)
against a real Redis: exactly-once expiry with three workers, both cleanup modes, and a
worker SIGKILLed in the middle of a sweep."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from arq.connections import RedisSettings as ArqRedisSettings
from arq.connections import create_pool

from sessionstore import (
    RedisSettings,
    SessionSettings,
    SessionStore,
    WorkerState,
    create_client,
    list_workers,
)
from sessionstore._scripts import Batch
from sessionstore.testing import ChildProcess, Supervisor, free_port
from tests.bulk import all_events, backdate, create_many, expired_per_session
from tests.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

SESSIONSTORE = str(Path(sys.executable).parent / "sessionstore")
ROOT = Path(__file__).resolve().parents[2]
DUE = timedelta(milliseconds=1)


class Fleet:
    """Worker processes started by one test (on the supervisor ``sessionstore dev`` uses);
    every one is stopped at the end."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.supervisor = Supervisor()
        self.processes: dict[str, ChildProcess] = {}

    def start(self, name: str, *, arq_cli: bool = False, burst: bool = False, **env: str) -> None:
        if arq_cli:
            command = [sys.executable, "-m", "arq", "workers.WorkerSettings"]
        else:
            command = [SESSIONSTORE, "worker"]
        if burst:
            command.append("--burst")
        self.processes[name] = self.supervisor.start(
            ChildProcess(
                name,
                command,
                log_path=self.directory / f"{name}.log",
                cwd=ROOT,
                env={**os.environ, **self.env, "SESSIONSTORE_WORKER_ID": name, **env},
            )
        )

    def log(self, name: str) -> str:
        return self.processes[name].log()

    async def wait(self, name: str, timeout: float) -> int:
        """Wait for a (burst) worker to exit; its log is in the failure message."""
        try:
            return await asyncio.to_thread(self.processes[name].wait, timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {timeout}s:\n{self.log(name)[-3000:]}")

    def stop_all(self) -> None:
        self.supervisor.stop()


@pytest.fixture
def fleet_env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {
        "SESSIONSTORE_REDIS_URL": redis_url,
        "SESSIONSTORE_QUEUE_REDIS_URL": "",
        "SESSIONSTORE_KEY_PREFIX": key_prefix,
        "SESSIONSTORE_SHARDS": "4",
        "SESSIONSTORE_EVENTS_MAXLEN": "200000",
        "SESSIONSTORE_HEARTBEAT_INTERVAL": "0.5",
        "SESSIONSTORE_WORKER_DEAD_AFTER": "2",
        "SESSIONSTORE_AGGRESSIVE_CLEANUP": "false",
        "SESSIONSTORE_SWEEP_INTERVAL": "86400",  # no cron tick unless a test asks for one
        "SESSIONSTORE_AGGRESSIVE_SWEEP_INTERVAL": "86400",
        "SESSIONSTORE_REPAIR_INTERVAL": "86400",
    }


@pytest.fixture
def fleet(tmp_path: Path, fleet_env: dict[str, str]) -> Iterator[Fleet]:
    processes = Fleet(tmp_path, fleet_env)
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[SessionStore]:
    """The store the worker processes serve (standalone; the queue is on the same Redis)."""
    client = create_client(RedisSettings.from_dsn(redis_url))
    settings = SessionSettings(key_prefix=key_prefix, shards=4, events_maxlen=200_000)
    yield SessionStore(client, settings)
    await client.aclose()


async def _live_workers(store: SessionStore, names: set[str]) -> None:
    async def all_live() -> bool:
        found = await list_workers(store.redis, store.keys, dead_after=timedelta(seconds=2))
        return {w.id for w in found if w.state is WorkerState.LIVE} >= names

    await eventually(all_live, timeout=60, interval=0.1)


async def _check_exactly_once(store: SessionStore, due: list[str], live: list[str]) -> None:
    """Each due session: one expired event, a tombstone, no record. Each live one:
    its record, no tombstone, no expired event."""
    expired = expired_per_session(await all_events(store.redis, store))
    assert expired == dict.fromkeys(due, 1)
    batch = Batch(store.redis)
    for session_id in due + live:
        keys = store.session_keys(session_id)
        batch.command("EXISTS", keys.record)
        batch.command("EXISTS", keys.tombstone)
    found = await batch.execute()
    pairs = [(int(found[i]), int(found[i + 1])) for i in range(0, len(found), 2)]
    assert pairs[: len(due)] == [(0, 1)] * len(due), "due: tombstone only"
    assert pairs[len(due) :] == [(1, 0)] * len(live), "live: record only"
    counts = await store.counts()
    assert (counts.active, counts.overdue, counts.totals["expired"]) == (len(live), 0, len(due))


async def test_three_workers_expire_exactly_the_due_sessions(
    store: SessionStore, fleet: Fleet
) -> None:
    """Standard mode, a 1 s sweep period: 20k sessions, 5k due, each expired exactly once."""
    for name in ("std-1", "std-2", "std-3"):
        fleet.start(name, SESSIONSTORE_SWEEP_INTERVAL="1", SESSIONSTORE_SWEEP_BATCH_SIZE="50")
    await _live_workers(store, {"std-1", "std-2", "std-3"})

    live = await create_many(store, 7500)
    due = await create_many(store, 5000, idle_timeout=DUE)
    live += await create_many(store, 7500)

    async def swept() -> bool:
        counts = await store.counts()
        return counts.totals["expired"] >= 5000 and counts.overdue == 0

    await eventually(swept, timeout=90, interval=0.2)
    await _check_exactly_once(store, due, live)
    fleet.stop_all()
    workers = await list_workers(store.redis, store.keys, dead_after=timedelta(seconds=2))
    assert {w.id: w.state for w in workers} == dict.fromkeys(
        ["std-1", "std-2", "std-3"], WorkerState.STOPPED
    )
    assert sum(w.jobs_run for w in workers) >= 1


async def test_aggressive_workers_sweep_the_backlog_at_start_up(
    store: SessionStore, fleet: Fleet
) -> None:
    """Aggressive mode after downtime: each of three workers (one started with arq's own
    CLI) queues a long-overdue pass at start-up; the passes run at the same time on
    whichever workers are free, and together expire the 5k sessions overdue for hours
    exactly once and leave the recently due ones.

    The cron periods are set to an hour so that no periodic sweep runs during the test:
    only the start-up passes can have expired anything."""
    live = await create_many(store, 15000)
    due = await create_many(store, 5000, idle_timeout=DUE)
    recent = await create_many(store, 50, idle_timeout=DUE)
    await backdate(store, due, timedelta(hours=2))
    aggressive = {
        "SESSIONSTORE_AGGRESSIVE_CLEANUP": "true",
        "SESSIONSTORE_SWEEP_BATCH_SIZE": "10",
        "SESSIONSTORE_SWEEP_INTERVAL": "3600",
        "SESSIONSTORE_AGGRESSIVE_SWEEP_INTERVAL": "3600",
    }

    fleet.start("agg-1", arq_cli=True, **aggressive)
    fleet.start("agg-2", **aggressive)
    fleet.start("agg-3", **aggressive)

    async def backlog_gone() -> bool:
        return (await store.counts()).totals["expired"] >= 5000

    await eventually(backlog_gone, timeout=90, interval=0.2)
    await _live_workers(store, {"agg-1", "agg-2", "agg-3"})

    # Each worker queues its own start-up pass, but any worker of the shared queue may
    # run it (arq hands a job to whoever polls first), so the passes are counted in the
    # fleet's logs rather than expected one per worker's heartbeat.
    finished = f"← {store.keys.prefix}:sweep_long_overdue ●"
    names = ("agg-1", "agg-2", "agg-3")

    async def three_passes_ran() -> bool:
        # At least: a cron tick at the top of an hour may add one.
        return sum(fleet.log(name).count(finished) for name in names) >= 3

    await eventually(three_passes_ran, timeout=60, interval=0.1)
    print("start-up passes run by each worker:", [fleet.log(n).count(finished) for n in names])
    expired = expired_per_session(await all_events(store.redis, store))
    assert expired == dict.fromkeys(due, 1)
    assert (await store.counts()).overdue == len(recent), "recently due: not long overdue"
    assert (await store.counts()).active == len(live)


async def test_a_worker_killed_mid_sweep_loses_nothing(store: SessionStore, fleet: Fleet) -> None:
    """SIGKILL during a sweep job: the worker is flagged dead, arq re-runs the job after
    its timeout + 10 s, and every due session ends up expired exactly once."""
    live = await create_many(store, 2000)
    due = await create_many(store, 20000, idle_timeout=DUE)
    short = {"SESSIONSTORE_JOB_TIMEOUT": "2", "SESSIONSTORE_SWEEP_BATCH_SIZE": "5"}
    fleet.start("victim", **short)
    await _live_workers(store, {"victim"})

    pool = await create_pool(ArqRedisSettings.from_dsn(fleet.env["SESSIONSTORE_REDIS_URL"]))
    try:
        job = await pool.enqueue_job(
            f"{store.keys.prefix}:sweep_due",
            _job_id=f"{store.keys.prefix}-kill-test",
            _queue_name=store.keys.job_queue(),
        )
        assert job is not None

        async def sweeping() -> int:
            return (await store.counts()).totals["expired"]

        await eventually(sweeping, timeout=30, interval=0.005)
        fleet.processes["victim"].kill()
        await fleet.wait("victim", timeout=30)
        at_kill = (await store.counts()).totals["expired"]
        assert 0 < at_kill < len(due), "the worker died in the middle of the sweep"
        in_progress = await pool.exists(f"arq:in-progress:{store.keys.prefix}-kill-test")
        assert in_progress, "the dead worker's job is still marked as taken"
    finally:
        await pool.aclose()

    async def flagged_dead() -> bool:
        found = await list_workers(store.redis, store.keys, dead_after=timedelta(seconds=2))
        return [(w.id, w.state) for w in found] == [("victim", WorkerState.DEAD)]

    await eventually(flagged_dead, timeout=30, interval=0.1)
    listed = await asyncio.create_subprocess_exec(
        SESSIONSTORE,
        "workers",
        "--json",
        env={**os.environ, **fleet.env},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(listed.communicate(), 60)
    assert listed.returncode == 0
    assert [(w["id"], w["state"]) for w in json.loads(out)] == [("victim", "dead")]

    fleet.start("heir", burst=True, **short)
    assert await fleet.wait("heir", timeout=180) == 0, fleet.log("heir")
    assert "try=2" in fleet.log("heir"), "arq re-ran the killed job"
    print(f"expired before the kill: {at_kill} of {len(due)}")
    await _check_exactly_once(store, due, live)


async def test_a_worker_whose_store_is_down_exits_3_with_a_clear_error(
    fleet: Fleet, redis_url: str
) -> None:
    """The queue answers but the store's Redis does not: the worker stops at start-up."""
    fleet.start(
        "orphan",
        SESSIONSTORE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        SESSIONSTORE_QUEUE_REDIS_URL=redis_url,
    )
    assert await fleet.wait("orphan", timeout=60) == 3
    assert "error: Redis unavailable during SCRIPT LOAD" in fleet.log("orphan")
