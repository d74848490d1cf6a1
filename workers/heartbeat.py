"""Per-worker liveness: a heartbeat every ``heartbeat_interval``, not a cron job.

arq de-duplicates cron runs across the fleet, so a heartbeat cannot be one:
each worker runs its own background task from start-up to shut-down. The
record (`sessionstore.fleet`) carries the worker's id, host, pid, start
time, jobs run and its last sweep and repair reports; ``sessionstore
workers`` reads it. A clean shut-down writes a last beat marked ``stopped``.
"""

from __future__ import annotations

import asyncio
import logging

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


async def _beat_forever(ctx: WorkerContext) -> None:
    interval = ctx["config"].heartbeat_interval.total_seconds()
    while True:
        await asyncio.sleep(interval)
        await beat(ctx)


async def start(ctx: WorkerContext) -> None:
    """Start the heartbeat task (its first beat is written before jobs run)."""
    await beat(ctx)
    ctx["heartbeat_task"] = asyncio.create_task(_beat_forever(ctx), name="heartbeat")


async def stop(ctx: WorkerContext) -> None:
    """Stop the task and write a last beat that says ``stopped``."""
    task = ctx.get("heartbeat_task")
    if task is not None:
        await stop_tasks([task])
    ctx["heartbeat"].stopped = True
    await beat(ctx)


async def count_job(ctx: WorkerContext) -> None:
    """Count every job this worker ran (arq's ``on_job_end``)."""
    ctx["heartbeat"].jobs_run += 1


def family(settings: Settings) -> JobFamily:
    """Liveness hooks (no jobs)."""
    return JobFamily("heartbeat", on_startup=[start], on_shutdown=[stop], on_job_end=[count_job])
