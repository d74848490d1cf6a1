"""Worker liveness: one heartbeat record per worker, not per queue.

arq's own health key is per queue, so it cannot tell which of several workers
died. Each worker writes a hash (`KeySpace.worker`: host, pid, start time,
jobs run, last sweep...) with a TTL, and notes its beat in an index of workers
(`KeySpace.worker_index`, scored by the beat's Redis time, pruned by age).
Readers compare each last beat with Redis's clock: older than the dead-after
bound means dead. A worker that shut down cleanly says so (``stopped``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

from .._keys import KeySpace
from .._redis import RedisClient, backend_errors
from .._scripts import Arg, Batch, ScriptLibrary
from .._time import from_ms, ms_to_datetime, to_ms

#: ``fleet/lua/``: the heartbeat record and the index of workers.
script = ScriptLibrary("sessionstore.fleet")


class WorkerState(StrEnum):
    """What a worker's heartbeat says about it."""

    #: Beat within the dead-after bound.
    LIVE = "live"
    #: No beat within the bound (killed, hung, or cut off from Redis).
    DEAD = "dead"
    #: Shut down cleanly.
    STOPPED = "stopped"


@dataclass
class Heartbeat:
    """What one worker reports about itself; the worker updates it as it runs.

    .. versionadded:: 0.1
    """

    worker_id: str
    host: str
    pid: int
    queue: str
    jobs_run: int = 0
    stopped: bool = False
    #: Latest reports by job family (``sweep``, ``repair``...), as JSON objects.
    reports: dict[str, dict[str, JsonValue]] = field(default_factory=dict)
    #: False until the first beat was written (that beat starts the record over).
    started: bool = False

    def fields(self) -> list[Arg]:
        """The hash fields of this beat (``last_beat``/``started_at`` come from Redis)."""
        flat: list[Arg] = [
            "id",
            self.worker_id,
            "status",
            WorkerState.STOPPED.value if self.stopped else "running",
            "host",
            self.host,
            "pid",
            self.pid,
            "queue",
            self.queue,
            "jobs_run",
            self.jobs_run,
        ]
        for name, report in sorted(self.reports.items()):
            flat += [f"last_{name}", json.dumps(report, separators=(",", ":"), default=str)]
        return flat


async def publish_heartbeat(
    redis: RedisClient, keys: KeySpace, beat: Heartbeat, *, ttl: timedelta
) -> datetime:
    """Write `beat` and note it in the index; one round trip on a single Redis.

    Returns the beat's Redis time.

    Raises:
        BackendUnavailable: Redis did not answer (the worker tries again next beat).

    .. versionadded:: 0.1
    """
    ttl_ms = to_ms(ttl)
    calls = Batch(redis)
    calls.script(
        script("heartbeat"),
        [keys.worker(beat.worker_id)],
        [ttl_ms, "0" if beat.started else "1", *beat.fields()],
    )
    calls.script(script("worker_index"), [keys.worker_index()], [beat.worker_id, ttl_ms])
    replies = await calls.execute()
    beat.started = True
    return ms_to_datetime(replies[0])


class WorkerInfo(BaseModel):
    """One worker as its heartbeat shows it.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    id: str
    state: WorkerState
    last_beat: datetime
    #: How long ago the last beat was, by Redis's clock.
    silent_for: timedelta
    host: str | None = None
    pid: int | None = None
    queue: str | None = None
    started_at: datetime | None = None
    jobs_run: int = 0
    #: Latest reports by job family (``sweep``, ``repair``...).
    reports: dict[str, JsonValue] = {}


def _info(
    worker_id: str, beat_ms: int, fields: Mapping[str, str], now_ms: int, dead_after: timedelta
) -> WorkerInfo:
    last_ms = int(fields.get("last_beat", beat_ms))
    silent = timedelta(milliseconds=max(0, now_ms - last_ms))
    if fields.get("status") == WorkerState.STOPPED.value:
        state = WorkerState.STOPPED
    elif not fields or silent > dead_after:
        state = WorkerState.DEAD
    else:
        state = WorkerState.LIVE
    reports: dict[str, Any] = {
        name.removeprefix("last_"): json.loads(value)
        for name, value in fields.items()
        if name.startswith("last_") and name != "last_beat"
    }
    return WorkerInfo(
        id=worker_id,
        state=state,
        last_beat=ms_to_datetime(last_ms),
        silent_for=silent,
        host=fields.get("host"),
        pid=int(fields["pid"]) if "pid" in fields else None,
        queue=fields.get("queue"),
        started_at=from_ms(fields.get("started_at")),
        jobs_run=int(fields.get("jobs_run", 0)),
        reports=reports,
    )


async def list_workers(
    redis: RedisClient, keys: KeySpace, *, dead_after: timedelta
) -> list[WorkerInfo]:
    """Every worker that beat within the heartbeat TTL, newest beat first.

    A worker whose record already lapsed is listed as dead from its index entry.

    Raises:
        BackendUnavailable: Redis did not answer.

    .. versionadded:: 0.1
    """
    with backend_errors("list workers"):
        indexed = await redis.zrange(keys.worker_index(), 0, -1, desc=True, withscores=True)
        calls = Batch(redis)
        calls.command("TIME")
        for worker_id, _ in indexed:
            calls.command("HGETALL", keys.worker(worker_id))
        replies = await calls.execute()
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return [
        _info(worker_id, int(score), fields or {}, now_ms, dead_after)
        for (worker_id, score), fields in zip(indexed, replies[1:], strict=True)
    ]


def summarize_workers(workers: Sequence[WorkerInfo]) -> dict[str, Any]:
    """The fleet in a few JSON figures: counts and ids by state, and the newest sweep.

    ``last_sweep`` is the newest sweep report any worker published (with that
    worker's id), or None when no worker has swept yet.

    .. versionadded:: 0.1
    """
    ids = {state: [w.id for w in workers if w.state is state] for state in WorkerState}
    sweeps = [
        (str(report.get("at", "")), worker.id, report)
        for worker in workers
        if isinstance(report := worker.reports.get("sweep"), dict)
    ]
    last_sweep = None
    if sweeps:
        _, worker_id, report = max(sweeps, key=lambda sweep: sweep[0])
        last_sweep = {"worker": worker_id, **report}
    return {
        "live": len(ids[WorkerState.LIVE]),
        "dead": len(ids[WorkerState.DEAD]),
        "stopped": len(ids[WorkerState.STOPPED]),
        "live_ids": ids[WorkerState.LIVE],
        "dead_ids": ids[WorkerState.DEAD],
        "last_sweep": last_sweep,
    }


#: Sweep periods the oldest overdue session may wait before health degrades: a
#: sweep runs every period, so a healthy fleet's lag stays below about one.
SWEEP_LAG_PERIODS = 3


def sweep_lag_limit(sweep_interval: timedelta, cap: timedelta) -> timedelta:
    """How long the oldest overdue session may wait before health says degraded.

    A few sweep periods (`SWEEP_LAG_PERIODS` x `sweep_interval`, the configured
    mode's period), and never more than `cap` (``health_max_sweeper_lag``).

    .. versionadded:: 0.1
    """
    return min(cap, SWEEP_LAG_PERIODS * sweep_interval)


def unswept_problem(live_workers: int, sweeper_lag: timedelta, max_lag: timedelta) -> str | None:
    """Why nobody expires overdue sessions, or None when that is not the case.

    The rule of health checks: no live worker is a problem only once the oldest
    overdue session has waited longer than `max_lag`. A fleet whose workers are
    restarting, or that has had nothing to expire, is not degraded for it; a
    fleet where sessions pile up past their deadlines with nobody to sweep them is.

    .. versionadded:: 0.1
    """
    if live_workers or sweeper_lag <= max_lag:
        return None
    return (
        f"no live worker, and the oldest overdue session has waited "
        f"{sweeper_lag.total_seconds():.0f}s (limit {max_lag.total_seconds():.0f}s): "
        "start `sessionstore worker`"
    )
