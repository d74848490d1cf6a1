"""The repair job: indexes rebuilt from the session records, on a schedule.

Runs every ``repair_interval`` on one worker of the fleet (arq de-duplicates
cron runs). It fixes the expiry index of every shard (entries missing, at the
wrong deadline, of ended ids, or of lost records; a development build's single
sorted set per shard is deleted once the shard's records are indexed in its time
buckets) and every user index
(missing and stale entries); see `sessionstore.repair_store`. A run that
reaches its time budget queues a follow-up from where it stopped. What it
fixed is logged, returned, and kept in the worker's heartbeat.
"""

from __future__ import annotations

import logging
from typing import Any

from sessionstore import Settings, repair_store

from .context import JobFamily, WorkerContext, cron_job, enqueue_follow_up, job_name

logger = logging.getLogger("sessionstore.workers.repair")


async def repair_indexes(
    ctx: WorkerContext,
    *,
    cursor: str | None = None,
    origin: str | None = None,
    chain: int = 0,
) -> dict[str, Any]:
    """Repair the expiry and user indexes (from `cursor`, within the time budget)."""
    config = ctx["config"]
    report = await repair_store(
        ctx["store"],
        cursor=cursor,
        batch=config.sweep_batch_size,
        time_budget=config.sweep_time_budget,
    )
    summary: dict[str, Any] = report.model_dump(exclude={"next_cursor"})
    summary["fixed"] = report.fixed
    if report.next_cursor is not None:
        name = job_name(ctx["store"].keys.prefix, "repair_indexes")
        summary["follow_up"] = await enqueue_follow_up(
            ctx, name, origin=origin, chain=chain, cursor=report.next_cursor
        )
    ctx["heartbeat"].reports["repair"] = summary
    if report.fixed:
        logger.warning("repair fixed %d index entries: %s", report.fixed, summary)
    else:
        logger.info("repair found nothing to fix (%d records)", report.records_scanned)
    return summary


def family(settings: Settings) -> JobFamily:
    """The repair cron job."""
    config, prefix = settings.worker, settings.session.key_prefix
    job = cron_job(
        config,
        repair_indexes,
        name=job_name(prefix, "repair_indexes"),
        interval=config.repair_interval,
    )
    return JobFamily("repair", cron_jobs=[job])
