"""The worker fleet's library side: `WorkerConfig` and per-worker heartbeats.

The arq layer (``workers/``, at the top level) builds on these; the server's
health and the CLI's ``sessionstore workers`` read the heartbeats.
"""

from __future__ import annotations

from ..settings import WorkerConfig, cron_interval_error
from ._heartbeat import (
    Heartbeat,
    WorkerInfo,
    WorkerState,
    list_workers,
    publish_heartbeat,
    summarize_workers,
    sweep_lag_limit,
    unswept_problem,
)

__all__ = [
    "Heartbeat",
    "WorkerConfig",
    "WorkerInfo",
    "WorkerState",
    "cron_interval_error",
    "list_workers",
    "publish_heartbeat",
    "summarize_workers",
    "sweep_lag_limit",
    "unswept_problem",
]
