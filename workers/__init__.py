"""arq workers for sessionstore: expiry sweeps, repair, reconnects (see workers.settings).

``arq workers.WorkerSettings`` starts a worker. Modules: ``settings`` (the arq
``WorkerSettings``), ``context`` (``ctx`` and job families), and one module per
job family: ``sweep``, ``repair``, ``heartbeat``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``workers.WorkerSettings`` (built from the environment on first access)."""
    if name == "WorkerSettings":
        from .settings import WorkerSettings

        return WorkerSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
