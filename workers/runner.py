"""Run a worker until it is stopped, riding out outages of the queue's Redis.

arq's own loop ends at the first connection error from the queue's Redis (a
restart, a Sentinel failover, a network blip), and its process exits. Servers
ride such an outage out (they answer 503 meanwhile), and so should a worker:
`run_until_stopped` then drops the broken arq `Worker` (its running jobs are
cancelled, its store client closed) and starts a fresh one on the same event
loop, which reconnects with arq's start-up retries, again and again, until
Redis answers or a signal stops the process. A job that was running when the
connection broke stays marked as taken in Redis and is re-run by arq after
its timeout, as after a crash; every job of the fleet is idempotent.

A worker that cannot reach a Redis when it first starts still fails at once
with the error: a wrong URL is a configuration error, not an outage.
``arq workers.WorkerSettings`` runs arq's loop directly and so still exits on
an outage (its supervisor restarts it).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import redis.exceptions as rex
from arq.worker import Worker, create_worker

from sessionstore import BackendUnavailable
from sessionstore.tasks import stop_tasks

from .context import WorkerContext

logger = logging.getLogger("sessionstore.workers.runner")

#: What an outage of the queue's (or the store's) Redis raises out of arq's loop.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    BackendUnavailable,
    OSError,
)


class _Run:
    """One process's worker: the current arq `Worker` and what it has seen so far."""

    def __init__(self, worker_settings: type) -> None:
        self.worker_settings = worker_settings
        #: A worker got through its start-up at least once: later errors are outages.
        self.started = False
        self.stop_signal: signal.Signals | None = None
        #: When the current outage began (monotonic), None while connected.
        self.lost_at: float | None = None

    def lost(self, exc: BaseException) -> None:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            logger.warning("lost Redis (%s); the worker reconnects when it is back", exc)
        else:
            waited = time.monotonic() - self.lost_at
            logger.warning("Redis still unreachable after %.0f s (%s); retrying", waited, exc)

    def new_worker(self) -> Worker:
        startup = getattr(self.worker_settings, "on_startup", None)

        async def on_startup(ctx: WorkerContext) -> None:
            if startup is not None:
                await startup(ctx)
            self.started = True
            if self.lost_at is not None:
                waited = time.monotonic() - self.lost_at
                logger.info("Redis is back after %.0f s: the worker runs again", waited)
                self.lost_at = None

        worker = create_worker(self.worker_settings, on_startup=on_startup)
        # The cron jobs are the settings' objects and remember their next run; a
        # fresh worker after an outage schedules from now instead of running every
        # tick it missed (and, in aggressive mode, runs its start-up pass again).
        for job in worker.cron_jobs:
            job.next_run = None
        # arq calls on_stop from its SIGINT/SIGTERM handler: a stop asked for
        # while Redis is away must not start another worker.
        worker.on_stop = self._note_stop
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
    while True:
        worker = run.new_worker()
        try:
            worker.run()
        except OUTAGE_ERRORS as exc:
            if not run.started:
                raise  # never got going: a configuration error, report it
            worker.loop.run_until_complete(_discard(worker))
            if run.stop_signal is not None:
                return worker
            run.lost(exc)
            continue
        return worker  # stopped by a signal


async def _discard(worker: Worker) -> None:
    """Finish what arq's close() could not with Redis gone; touches Redis only if it is back."""
    await stop_tasks(worker.tasks.values())
    worker.tasks.clear()
    ctx: dict[str, Any] = worker.ctx
    if worker.on_shutdown is not None and "store_redis" in ctx:
        try:
            # Stops the heartbeat task and closes the store client.
            await worker.on_shutdown(ctx)
        except OUTAGE_ERRORS as exc:
            logger.warning("shut-down hooks of the lost worker failed: %s", exc)
        ctx.pop("store_redis", None)
    # arq's close() stopped before closing its pool (Redis was gone): the worker
    # is dropped, so close the pool's connections here.
    if worker.pool is not None:
        await worker.pool.aclose(close_connection_pool=True)
