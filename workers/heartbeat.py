"""Per-worker liveness: a heartbeat every ``heartbeat_interval``, written by the job loop.

arq de-duplicates cron runs across the fleet, so a heartbeat cannot be a cron
job. Under ``sessionstore worker`` the job loop writes it (`beat_when_due`,
called by ``workers.runner.FleetWorker`` on every pass of arq's loop): a
fresh beat means the loop runs, so a loop stuck on a silent Redis is reported
dead after ``worker_dead_after``. Under arq's own CLI (a plain arq `Worker`)
a background task beats instead, which cannot see a stuck loop. The record
(`sessionstore.fleet`) carries the worker's id, host, pid, start time, jobs
run and its last sweep and repair reports; ``sessionstore workers`` reads it.
A clean shut-down writes a last beat marked ``stopped``; a worker dropped for
an outage writes nothing, so it shows dead until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sessionstore import BackendUnavailable, Settings, publish_heartbeat
from sessionstore.tasks import stop_tasks

from .context import JobFamily, WorkerContext

logger = logging.getLogger("sessionstore.workers.heartbeat")


async def beat(ctx: WorkerContext) -> bool:
    """Publish this worker's heartbeat once; False (logged) when Redis is away."""
    try:
        await publish_heartbeat(
            ctx["store_redis"],
            ctx["store"].keys,
            ctx["heartbeat"],
            ttl=ctx["config"].heartbeat_ttl,
        )
    except BackendUnavailable as exc:
        logger.warning("heartbeat of %s not written: %s", ctx["heartbeat"].worker_id, exc)
        return False
    return True


async def beat_when_due(ctx: WorkerContext) -> None:
    """Beat if ``heartbeat_interval`` has passed since the last beat (the job loop's hook)."""
    if "heartbeat" not in ctx:
        return  # start-up has not run yet
    now = time.monotonic()
    if now - ctx.get("beat_at", 0.0) < ctx["config"].heartbeat_interval.total_seconds():
        return
    ctx["beat_at"] = now
    await beat(ctx)


async def _beat_forever(ctx: WorkerContext) -> None:
    interval = ctx["config"].heartbeat_interval.total_seconds()
    while True:
        await asyncio.sleep(interval)
        await beat(ctx)


async def start(ctx: WorkerContext) -> None:
    """Write the first beat before jobs run; start a beating task unless the loop beats."""
    await beat(ctx)
    ctx["beat_at"] = time.monotonic()
    if not ctx.get("beats_from_loop"):
        ctx["heartbeat_task"] = asyncio.create_task(_beat_forever(ctx), name="heartbeat")


async def stop(ctx: WorkerContext) -> None:
    """Stop the task and write a last beat that says ``stopped`` (not after an outage)."""
    task = ctx.get("heartbeat_task")
    if task is not None:
        await stop_tasks([task])
    if ctx.get("lost_redis"):
        return
    ctx["heartbeat"].stopped = True
    await beat(ctx)


async def count_job(ctx: WorkerContext) -> None:
    """Count every job this worker ran (arq's ``on_job_end``)."""
    ctx["heartbeat"].jobs_run += 1


def family(settings: Settings) -> JobFamily:
    """Liveness hooks (no jobs)."""
    return JobFamily("heartbeat", on_startup=[start], on_shutdown=[stop], on_job_end=[count_job])
