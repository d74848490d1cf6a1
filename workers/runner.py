"""Run a worker until it is stopped, riding out outages of the queue's Redis.

arq's own loop ends at the first connection error from the queue's Redis (a
restart, a Sentinel failover, a network blip), and its process exits. Servers
ride such an outage out (they answer 503 meanwhile), and so should a worker:
`run_until_stopped` then drops the broken arq `Worker` (its running jobs are
cancelled, its store client closed) and starts a fresh one on the same event
loop, on a fresh connection pool, again and again, until Redis answers or a
signal stops the process. A job that was running when the connection broke
stays marked as taken in Redis and is re-run by arq after its timeout, as
after a crash; every job of the fleet is idempotent.

A silent Redis (a hung primary, a network cut: no reply and no reset) is an
outage too: the queue pool is built here with the read timeout of the queue's
`RedisSettings` (arq's `create_pool` has none), so a loop waiting on a dead
connection fails after that timeout instead of hanging for ever. And the
heartbeat is written from the job loop itself (`FleetWorker.record_health`),
so a loop that is stuck stops beating and is reported dead after
``worker_dead_after``.

A worker that cannot reach a Redis when it first starts still fails at once
with the error: a wrong URL is a configuration error, not an outage.
``arq workers.WorkerSettings`` runs arq's loop directly and so still exits on
an outage (its supervisor restarts it), and beats from a side task.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, cast

import redis.exceptions as rex
from arq.connections import ArqRedis, create_pool
from arq.constants import default_queue_name
from arq.worker import Worker, get_kwargs
from redis.asyncio.sentinel import Sentinel

from sessionstore import BackendUnavailable, RedisSettings
from sessionstore.tasks import stop_tasks

from . import heartbeat
from .context import WorkerContext

logger = logging.getLogger("sessionstore.workers.runner")

#: What an outage of the queue's (or the store's) Redis raises out of arq's loop.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    BackendUnavailable,
    OSError,
)
#: Pause between two tries to reach the queue's Redis during an outage.
RECONNECT_DELAY = 1.0


class FleetWorker(Worker):
    """arq's `Worker`, writing this worker's heartbeat from its job loop.

    arq calls ``record_health`` on every pass of its polling loop (arq 0.28,
    pinned in pyproject.toml; a test checks it): beating from there means a
    fresh heartbeat says the loop runs, not merely that the process is alive.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx["beats_from_loop"] = True

    async def record_health(self) -> None:
        """arq's queue health record, then this worker's heartbeat when one is due."""
        await super().record_health()
        await heartbeat.beat_when_due(cast(WorkerContext, self.ctx))


async def connect_queue(settings: RedisSettings, queue_name: str) -> ArqRedis:
    """An arq pool on the queue's Redis with connect and read timeouts; pinged once.

    Raises:
        redis.ConnectionError / redis.TimeoutError / OSError: Redis did not answer.
    """
    common: dict[str, Any] = {
        "db": settings.database,
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_connect_timeout": settings.connect_timeout.total_seconds(),
        "socket_timeout": settings.socket_timeout.total_seconds(),
        "ssl": settings.tls,
        "default_queue_name": queue_name,
    }
    pool: ArqRedis
    if settings.mode == "sentinel":
        sentinel = Sentinel(
            list(settings.hosts),
            socket_timeout=settings.socket_timeout.total_seconds(),
            socket_connect_timeout=settings.connect_timeout.total_seconds(),
        )
        pool = sentinel.master_for(settings.sentinel_master, redis_class=ArqRedis, **common)
    elif settings.unix_socket_path:
        common.pop("ssl")
        pool = ArqRedis(unix_socket_path=settings.unix_socket_path, **common)
    else:
        host, port = settings.hosts[0]
        pool = ArqRedis(host=host, port=port, **common)
    try:
        await pool.ping()
    except BaseException:
        await pool.aclose(close_connection_pool=True)
        raise
    return pool


class _Run:
    """One process's worker: the current arq `Worker` and what it has seen so far."""

    def __init__(self, worker_settings: type) -> None:
        self.worker_settings = worker_settings
        #: A worker got through its start-up at least once: later errors are outages.
        self.started = False
        self.stop_signal: signal.Signals | None = None
        #: When the current outage began (monotonic), None while connected.
        self.lost_at: float | None = None
        self.worker: Worker | None = None

    def lost(self, exc: BaseException) -> None:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            logger.warning("lost Redis (%s); the worker reconnects when it is back", exc)
        else:
            waited = time.monotonic() - self.lost_at
            logger.warning("Redis still unreachable after %.0f s (%s); retrying", waited, exc)

    async def connect(self) -> ArqRedis:
        queue_redis: RedisSettings | None = getattr(self.worker_settings, "queue_redis", None)
        queue_name: str = getattr(self.worker_settings, "queue_name", default_queue_name)
        if queue_redis is None:  # a WorkerSettings of the caller's own: arq's pool
            arq_settings = getattr(self.worker_settings, "redis_settings", None)
            pool: ArqRedis = await create_pool(arq_settings, default_queue_name=queue_name)
            return pool
        return await connect_queue(queue_redis, queue_name)

    def new_worker(self, pool: ArqRedis) -> Worker:
        startup = getattr(self.worker_settings, "on_startup", None)

        async def on_startup(ctx: WorkerContext) -> None:
            if startup is not None:
                await startup(ctx)
            self.started = True
            if self.lost_at is not None:
                waited = time.monotonic() - self.lost_at
                logger.info("Redis is back after %.0f s: the worker runs again", waited)
                self.lost_at = None

        kwargs = {**get_kwargs(self.worker_settings), "on_startup": on_startup, "redis_pool": pool}
        worker = FleetWorker(**kwargs)
        # The cron jobs are the settings' objects and remember their next run; a
        # fresh worker after an outage schedules from now instead of running every
        # tick it missed (and, in aggressive mode, runs its start-up pass again).
        for job in worker.cron_jobs:
            job.next_run = None
        # arq calls on_stop from its SIGINT/SIGTERM handler: a stop asked for
        # while Redis is away must not start another worker.
        worker.on_stop = self._note_stop
        self.worker = worker
        return worker

    def _note_stop(self, signum: signal.Signals) -> None:
        self.stop_signal = signum


def run_until_stopped(worker_settings: type) -> Worker:
    """Run arq workers built from `worker_settings` until SIGINT/SIGTERM.

    Returns:
        The last arq `Worker` (stopped cleanly).

    Raises:
        redis.ConnectionError / redis.TimeoutError / BackendUnavailable / OSError:
            a Redis could not be reached before the worker first started.
    """
    run = _Run(worker_settings)
    # arq's Worker runs on the current event loop: make it, and connect on it first.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    while True:
        try:
            pool = loop.run_until_complete(run.connect())
        except OUTAGE_ERRORS as exc:
            if not run.started:
                raise  # never got going: a configuration error, report it
            if run.stop_signal is not None and run.worker is not None:
                return run.worker
            run.lost(exc)
            loop.run_until_complete(asyncio.sleep(RECONNECT_DELAY))
            continue
        worker = run.new_worker(pool)
        try:
            worker.run()
        except OUTAGE_ERRORS as exc:
            if not run.started:
                raise
            loop.run_until_complete(_discard(worker, pool))
            if run.stop_signal is not None:
                return worker
            run.lost(exc)
            continue
        return worker  # stopped by a signal


async def _discard(worker: Worker, pool: ArqRedis) -> None:
    """Finish what arq's close() could not with Redis gone; touches Redis only if it is back."""
    await stop_tasks(worker.tasks.values())
    worker.tasks.clear()
    ctx: dict[str, Any] = worker.ctx
    # An outage, not a shut-down: the heartbeat goes stale (dead), it does not say stopped.
    ctx["lost_redis"] = True
    if worker.on_shutdown is not None and "store_redis" in ctx:
        try:
            # Stops a heartbeat task and closes the store client.
            await worker.on_shutdown(ctx)
        except OUTAGE_ERRORS as exc:
            logger.warning("shut-down hooks of the lost worker failed: %s", exc)
        ctx.pop("store_redis", None)
    # The pool is this module's: arq's close() stopped before closing it.
    await pool.aclose(close_connection_pool=True)
