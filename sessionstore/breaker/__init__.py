"""Circuit breakers whose state is shared in Redis by the whole fleet.

One breaker per upstream (``imap:imap.mail.me.com:993``). `BreakerRegistry`
holds a process's breakers and keeps their local views in step with Redis
(pub/sub push, polling fallback); `Breaker.guard` guards a call without a
Redis round trip while the breaker is closed; `BreakerAdmin` inspects and
steers breakers without a registry. See ``docs/breaker.md``.

Modules: ``_model`` (value objects), ``_policy`` (pure rules), ``_remote``
(scripts and replies), ``_view`` (local view), ``_outcomes`` (batching),
``_guard`` (guarded calls), ``_listener`` (pub/sub), ``_health`` (Redis
outages), ``_registry`` (the per-process owner), ``_admin`` (manual control).
"""

from __future__ import annotations

from ..settings import BreakerSettings
from ._admin import BreakerAdmin
from ._guard import Attempt, AttemptKind, Breaker, Classifier, Guard
from ._model import (
    AuditEntry,
    BreakerEvent,
    BreakerHealth,
    BreakerSnapshot,
    BreakerState,
    BreakerStatus,
    Outcome,
)
from ._registry import BreakerRegistry, TransitionCallback

__all__ = [
    "Attempt",
    "AttemptKind",
    "AuditEntry",
    "Breaker",
    "BreakerAdmin",
    "BreakerEvent",
    "BreakerHealth",
    "BreakerRegistry",
    "BreakerSettings",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerStatus",
    "Classifier",
    "Guard",
    "Outcome",
    "TransitionCallback",
]
