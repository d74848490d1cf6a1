"""What every job of the fleet shares: the ``ctx`` it gets, job families, cron periods.

arq hands each job a plain dict as ``ctx``; `WorkerContext` declares what is
in it (filled by ``on_startup`` in ``workers/settings.py``; a family's own
resources go in as ``NotRequired`` keys set by its start-up hook). Each module
of ``workers/`` contributes one `JobFamily` (its functions, cron jobs and
hooks) from ``family(settings)``; ``workers/settings.py`` assembles them, so a
new job family is one more entry in ``FAMILIES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

from arq.connections import ArqRedis
from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from arq.worker import Function

from sessionstore import Heartbeat, RedisClient, SessionStore, WorkerConfig
from sessionstore.breaker import BreakerRegistry
from sessionstore.upstream import Reconnector

#: A cron job that a killed worker left running is tried again, up to this many times
#: (arq's default for cron jobs is 1: no re-run at all).
CRON_MAX_TRIES = 3


class WorkerContext(TypedDict):
    """The ``ctx`` of every job and hook of this fleet."""

    #: Set by arq: the job queue's Redis.
    redis: ArqRedis
    #: The session store and its client (closed at shut-down).
    store: SessionStore
    store_redis: RedisClient
    config: WorkerConfig
    #: The arq queue this worker serves (follow-up jobs go there).
    queue_name: str
    #: This worker's liveness record, published by ``workers/heartbeat.py``.
    heartbeat: Heartbeat
    #: Set by ``workers.runner.FleetWorker``: its job loop writes the heartbeat.
    beats_from_loop: NotRequired[bool]
    #: When the last beat was written (monotonic seconds).
    beat_at: NotRequired[float]
    #: Only under arq's own CLI: the task that beats instead of the loop.
    heartbeat_task: NotRequired[asyncio.Task[None]]
    #: Set when the worker is dropped for an outage (its heartbeat must not say stopped).
    lost_redis: NotRequired[bool]
    #: Reconnects upstream connections, and the breakers it consults (``workers/reconnect.py``).
    reconnector: NotRequired[Reconnector]
    breakers: NotRequired[BreakerRegistry]
    #: Set by arq for each job.
    job_id: NotRequired[str]
    job_try: NotRequired[int]
    enqueue_time: NotRequired[datetime]
    score: NotRequired[int]


#: A start-up, shut-down or job-end hook.
Hook = Callable[[WorkerContext], Awaitable[None]]


@dataclass(frozen=True)
class JobFamily:
    """One module's contribution to the worker: jobs, cron jobs and hooks."""

    name: str
    functions: Sequence[Function] = ()
    cron_jobs: Sequence[CronJob] = ()
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()
    on_job_end: Sequence[Hook] = ()


def job_name(prefix: str, name: str) -> str:
    """A job's name in the queue, namespaced by the key prefix.

    arq's job keys (``arq:job:<id>``) and cron job ids (``<name>:<run time>``)
    are global in the queue's Redis: the prefix keeps two deployments (or two
    test runs) that share it from swallowing each other's cron runs.
    """
    return f"{prefix}:{name}"


def cron_fields(interval: timedelta) -> dict[str, Any]:
    """arq cron fields that fire every `interval` (checked by `WorkerConfig`)."""
    seconds = int(interval.total_seconds())
    if seconds < 60:
        return {"second": set(range(0, 60, seconds))}
    if seconds < 3600:
        return {"minute": set(range(0, 60, seconds // 60)), "second": 0}
    return {"hour": set(range(0, 24, seconds // 3600)), "minute": 0, "second": 0}


def as_arq(coroutine: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """A job taking a `WorkerContext`, typed as arq's coroutine (arq declares ``dict``)."""
    return cast(WorkerCoroutine, coroutine)


def cron_job(
    config: WorkerConfig,
    coroutine: Callable[..., Awaitable[Any]],
    *,
    name: str,
    interval: timedelta,
    run_at_startup: bool = False,
) -> CronJob:
    """A cron job with this fleet's rules: short timeout, re-run after a crash, no result kept."""
    return cron(
        as_arq(coroutine),
        name=name,
        run_at_startup=run_at_startup,
        timeout=config.job_timeout,
        max_tries=CRON_MAX_TRIES,
        keep_result=0,
        **cron_fields(interval),
    )


async def enqueue_follow_up(
    ctx: WorkerContext, name: str, *, origin: str | None, chain: int, **kwargs: Any
) -> str:
    """Queue the next part of a job that stopped at its budget; returns its job id.

    The id is derived from the first job's id, so a re-run of a killed job
    queues the same follow-up rather than a second one.
    """
    first = origin or ctx.get("job_id") or name
    job_id = f"{first}:more{chain + 1}"
    await ctx["redis"].enqueue_job(
        name,
        _job_id=job_id,
        _queue_name=ctx["queue_name"],
        origin=first,
        chain=chain + 1,
        **kwargs,
    )
    return job_id
