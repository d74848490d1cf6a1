"""sessionstore: a Redis-backed distributed session store with a worker fleet.

Every server replica keeps its client sessions in Redis through `SessionStore`;
arq workers (``workers/``) expire them and reconnect upstreams; circuit-breaker
state is shared in Redis so every replica agrees on which upstream is healthy.
"""

from __future__ import annotations

from ._embedded import LocalCluster, LocalRedis, find_server_binary
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
from ._requests import Lease, TrackedLease
from ._settings import RedisSettings, SessionSettings, Settings, UpstreamSettings
from ._store import Mutator, SessionStore
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
    UpstreamRejected,
    UpstreamUnavailable,
    VersionConflict,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "BreakerOpen",
    "ConflictError",
    "GlobalLimitExceeded",
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
    "SweepResult",
    "Tombstone",
    "TrackedLease",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamSettings",
    "UpstreamUnavailable",
    "VersionConflict",
    "create_client",
    "find_server_binary",
    "new_session_id",
]
