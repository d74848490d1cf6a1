"""sessionstore: a Redis-backed distributed session store with a worker fleet.

Every server replica keeps its client sessions in Redis through `SessionStore`;
arq workers (``workers/``) expire them and reconnect upstreams; circuit-breaker
state is shared in Redis so every replica agrees on which upstream is healthy.
"""

from __future__ import annotations

from ._environment import Settings
from ._ids import new_session_id
from ._keys import KeySpace, SessionKeys
from ._redis import RedisClient, create_client
from .breaker import BreakerAdmin, BreakerRegistry, BreakerState
from .exceptions import (
    BackendUnavailable,
    BreakerOpen,
    ConflictError,
    GlobalLimitExceeded,
    InvalidInput,
    InvalidSessionId,
    LimitExceeded,
    LockError,
    LockNotAcquired,
    LockNotOwned,
    PayloadTooLarge,
    SessionClosed,
    SessionExpired,
    SessionGone,
    SessionLimitExceeded,
    SessionNotFound,
    SessionRotated,
    SessionStoreError,
    StaleFence,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
    VersionConflict,
)
from .fleet import Heartbeat, WorkerConfig, WorkerInfo, WorkerState, list_workers, publish_heartbeat
from .settings import (
    BreakerSettings,
    RedisSettings,
    ServerSettings,
    SessionSettings,
)
from .store import (
    Event,
    EventConsumer,
    EventFollower,
    EventKind,
    Lease,
    Mutator,
    RepairReport,
    Session,
    SessionCounts,
    SessionDraft,
    SessionLock,
    SessionStatus,
    SessionStore,
    ShardCounts,
    SweepReport,
    SweepResult,
    Tombstone,
    TrackedLease,
    repair_store,
    sweep_store,
)
from .upstream import UpstreamSettings

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "BreakerAdmin",
    "BreakerOpen",
    "BreakerRegistry",
    "BreakerSettings",
    "BreakerState",
    "ConflictError",
    "Event",
    "EventConsumer",
    "EventFollower",
    "EventKind",
    "GlobalLimitExceeded",
    "Heartbeat",
    "InvalidInput",
    "InvalidSessionId",
    "KeySpace",
    "Lease",
    "LimitExceeded",
    "LockError",
    "LockNotAcquired",
    "LockNotOwned",
    "Mutator",
    "PayloadTooLarge",
    "RedisClient",
    "RedisSettings",
    "RepairReport",
    "ServerSettings",
    "Session",
    "SessionClosed",
    "SessionCounts",
    "SessionDraft",
    "SessionExpired",
    "SessionGone",
    "SessionKeys",
    "SessionLimitExceeded",
    "SessionLock",
    "SessionNotFound",
    "SessionRotated",
    "SessionSettings",
    "SessionStatus",
    "SessionStore",
    "SessionStoreError",
    "Settings",
    "ShardCounts",
    "StaleFence",
    "SweepReport",
    "SweepResult",
    "Tombstone",
    "TrackedLease",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamRejected",
    "UpstreamSettings",
    "UpstreamUnavailable",
    "VersionConflict",
    "WorkerConfig",
    "WorkerInfo",
    "WorkerState",
    "create_client",
    "list_workers",
    "new_session_id",
    "publish_heartbeat",
    "repair_store",
    "sweep_store",
]
