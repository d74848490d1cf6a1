"""sessionstore: a Redis-backed distributed session store with a worker fleet.

Every server replica keeps its client sessions in Redis through `SessionStore`;
arq workers (``workers/``) expire them and reconnect upstreams; circuit-breaker
state is shared in Redis so every replica agrees on which upstream is healthy.
"""

from __future__ import annotations

from ._embedded import LocalCluster, LocalRedis, find_server_binary
from ._environment import Settings
from ._events import Event, EventConsumer, EventFollower, EventKind
from ._heartbeat import Heartbeat, WorkerInfo, WorkerState, list_workers, publish_heartbeat
from ._ids import new_session_id
from ._keys import KeySpace, SessionKeys
from ._lock import SessionLock
from ._models import (
    Session,
    SessionCounts,
    SessionStatus,
    ShardCounts,
    SweepResult,
    Tombstone,
)
from ._redis import RedisClient, create_client
from ._repair import RepairReport, repair_store
from ._requests import Lease, TrackedLease
from ._settings import (
    BreakerSettings,
    RedisSettings,
    SessionSettings,
    UpstreamSettings,
)
from ._store import Mutator, SessionStore
from ._sweeper import SweepReport, sweep_store
from ._worker_config import WorkerConfig
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
    "LocalCluster",
    "LocalRedis",
    "LockError",
    "LockNotAcquired",
    "LockNotOwned",
    "Mutator",
    "PayloadTooLarge",
    "RedisClient",
    "RedisSettings",
    "RepairReport",
    "Session",
    "SessionClosed",
    "SessionCounts",
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
    "find_server_binary",
    "list_workers",
    "new_session_id",
    "publish_heartbeat",
    "repair_store",
    "sweep_store",
]
