"""Expiry sweeps: cron jobs that expire due sessions on every shard.

Tiered cleanup:

- standard mode: ``sweep_due`` every ``sweep_interval``;
- aggressive mode (``SESSIONSTORE_AGGRESSIVE_CLEANUP=true``): ``sweep_due``
  every ``aggressive_sweep_interval``, plus ``sweep_long_overdue`` as soon as
  each worker starts (and every ``sweep_interval``), which takes only sessions
  overdue by at least ``long_overdue_after``, oldest first.

A run sweeps in rounds of atomic batches (`sessionstore.sweep_store`) until
nothing is due or its budget (``sweep_max_per_run`` entries, half the job
timeout) is spent; then it queues a follow-up job, so a backlog after downtime
is cleared without waiting for the next tick. Every run is idempotent: a
session is expired by exactly one script, whichever worker runs it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sessionstore import Settings, SweepReport, sweep_store

from .context import JobFamily, WorkerContext, cron_job, enqueue_follow_up, job_name

logger = logging.getLogger("sessionstore.workers.sweep")


async def sweep_due(
    ctx: WorkerContext, *, origin: str | None = None, chain: int = 0
) -> dict[str, Any]:
    """Expire every due session (up to the run's budget)."""
    return await _sweep(ctx, "sweep_due", timedelta(0), origin=origin, chain=chain)


async def sweep_long_overdue(
    ctx: WorkerContext, *, origin: str | None = None, chain: int = 0
) -> dict[str, Any]:
    """Expire sessions overdue by at least ``long_overdue_after`` (aggressive mode)."""
    overdue = ctx["config"].long_overdue_after
    return await _sweep(ctx, "sweep_long_overdue", overdue, origin=origin, chain=chain)


async def _sweep(
    ctx: WorkerContext, job: str, min_overdue: timedelta, *, origin: str | None, chain: int
) -> dict[str, Any]:
    config = ctx["config"]
    report = await sweep_store(
        ctx["store"],
        batch=config.sweep_batch_size,
        max_sessions=config.sweep_max_per_run,
        time_budget=config.sweep_time_budget,
        min_overdue=min_overdue,
    )
    summary = summarize(job, report)
    if report.stopped != "done" and report.still_due:
        name = job_name(ctx["store"].keys.prefix, job)
        summary["follow_up"] = await enqueue_follow_up(ctx, name, origin=origin, chain=chain)
    ctx["heartbeat"].reports["sweep"] = summary
    if report.expired or report.still_due:
        logger.info(
            "%s: expired %d (lost %d), rescheduled %d, %d still due, stopped: %s",
            job,
            report.expired,
            report.lost,
            report.rescheduled,
            report.still_due,
            report.stopped,
        )
    return summary


def summarize(job: str, report: SweepReport) -> dict[str, Any]:
    """A sweep report as the JSON object kept in the heartbeat and job result."""
    return {
        "job": job,
        "at": report.finished_at.isoformat(),
        "expired": report.expired,
        "lost": report.lost,
        "rescheduled": report.rescheduled,
        "removed": report.removed,
        "still_due": report.still_due,
        "rounds": report.rounds,
        "stopped": report.stopped,
        "seconds": round((report.finished_at - report.started_at).total_seconds(), 3),
    }


def family(settings: Settings) -> JobFamily:
    """The sweep cron jobs of the configured mode."""
    config, prefix = settings.worker, settings.session.key_prefix
    jobs = [
        cron_job(
            config,
            sweep_due,
            name=job_name(prefix, "sweep_due"),
            interval=config.active_sweep_interval,
        )
    ]
    if config.aggressive_cleanup:
        jobs.append(
            cron_job(
                config,
                sweep_long_overdue,
                name=job_name(prefix, "sweep_long_overdue"),
                interval=config.sweep_interval,
                run_at_startup=True,
            )
        )
    return JobFamily("sweep", cron_jobs=jobs)
