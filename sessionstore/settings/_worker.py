"""`WorkerConfig`: how the arq worker fleet sweeps, repairs and reports liveness.

Read as `Settings.worker` (environment ``SESSIONSTORE_*``) by
``workers/settings.py`` or the CLI, then passed down. Cron intervals must
divide a minute, an hour or a day evenly, because arq schedules cron jobs by
wall-clock fields (seconds, minutes, hours), not by period.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._ids import check_name
from ._types import Duration, EmptyIsNone

_MINUTE, _HOUR, _DAY = 60, 3600, 86400


def cron_interval_error(interval: timedelta) -> str | None:
    """Why `interval` cannot be a cron period, or None when it can.

    A period fits arq's wall-clock cron when it is a whole number of seconds
    dividing a minute, of minutes dividing an hour, or of hours dividing a day.
    """
    total = interval.total_seconds()
    seconds = int(total)
    if seconds != total or seconds < 1:
        return "must be a whole number of seconds, at least 1"
    if seconds < _MINUTE and _MINUTE % seconds == 0:
        return None
    if seconds < _HOUR and seconds % _MINUTE == 0 and _HOUR % seconds == 0:
        return None
    if seconds <= _DAY and seconds % _HOUR == 0 and _DAY % seconds == 0:
        return None
    return "must divide a minute, an hour or a day evenly (e.g. 10s, 30s, 5m, 15m, 1h, 6h)"


class WorkerConfig(BaseModel):
    """The worker fleet's knobs (sweeps, repair, heartbeats, job timeouts).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Tiered cleanup: sweep every `aggressive_sweep_interval` instead of
    #: `sweep_interval`, and expire long-overdue sessions as soon as a worker starts.
    aggressive_cleanup: bool = False
    #: Standard mode: how often the due head of every shard's expiry index is swept.
    sweep_interval: Duration = timedelta(minutes=1)
    #: Aggressive mode's sweep period.
    aggressive_sweep_interval: Duration = timedelta(seconds=10)
    #: Sessions expired per shard by one atomic script.
    sweep_batch_size: int = Field(default=500, ge=1, le=10_000)
    #: Index entries one sweep run handles at most; the rest go to a follow-up job.
    sweep_max_per_run: int = Field(default=50_000, ge=1)
    #: Aggressive mode's start-up pass takes sessions overdue by at least this long.
    long_overdue_after: Duration = timedelta(hours=1)
    #: How often the repair job rebuilds indexes from the session records.
    repair_interval: Duration = timedelta(hours=1)
    #: How often each worker writes its heartbeat.
    heartbeat_interval: Duration = timedelta(seconds=10)
    #: How long a worker's heartbeat record stays readable after its last beat.
    heartbeat_ttl: Duration = timedelta(hours=1)
    #: A worker whose last beat is older than this is reported dead.
    worker_dead_after: Duration = timedelta(seconds=30)
    #: arq's timeout for every job; a killed worker's job re-runs after this + 10 s.
    job_timeout: Duration = timedelta(seconds=30)
    #: This worker's id in heartbeats (default: ``<host>-<pid>``).
    worker_id: EmptyIsNone[str] = None
    #: The arq queue's key (default: ``<key_prefix>:queue``, see `KeySpace.job_queue`).
    queue_name: EmptyIsNone[str] = Field(default=None, pattern=r"^[A-Za-z0-9_.:{}-]{1,128}$")

    @model_validator(mode="after")
    def _check(self) -> WorkerConfig:
        for name in ("sweep_interval", "aggressive_sweep_interval", "repair_interval"):
            problem = cron_interval_error(getattr(self, name))
            if problem:
                raise ValueError(f"{name} {problem}")
        for name in ("long_overdue_after", "heartbeat_interval", "job_timeout"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.job_timeout < timedelta(seconds=1):
            raise ValueError("job_timeout must be at least 1 second")
        if self.worker_dead_after <= self.heartbeat_interval:
            raise ValueError("worker_dead_after must be longer than heartbeat_interval")
        if self.heartbeat_ttl < self.worker_dead_after:
            raise ValueError("heartbeat_ttl must be at least worker_dead_after")
        if self.sweep_max_per_run < self.sweep_batch_size:
            raise ValueError("sweep_max_per_run must be at least sweep_batch_size")
        if self.worker_id is not None:
            check_name(self.worker_id, "worker_id")
        return self

    @property
    def active_sweep_interval(self) -> timedelta:
        """The sweep period of the configured mode."""
        return self.aggressive_sweep_interval if self.aggressive_cleanup else self.sweep_interval

    @property
    def sweep_time_budget(self) -> timedelta:
        """A sweep run stops taking batches after this, well inside `job_timeout`."""
        return self.job_timeout / 2

    def resolved_worker_id(self) -> str:
        """`worker_id`, or ``<host>-<pid>`` of this process (made key-safe)."""
        if self.worker_id is not None:
            return self.worker_id
        host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname()[:200])
        return check_name(f"{host or 'host'}-{os.getpid()}", "worker_id")
