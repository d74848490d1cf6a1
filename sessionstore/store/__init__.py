"""The session store core: sessions in Redis, one atomic Lua script per transition.

`SessionStore` creates, reads, touches, writes, ends, resumes and rotates
sessions; request and connection leases, locks with fencing, the user index,
counts, the sweep, repair, events and listing are its helpers, one module
each, and take the store's `StoreContext` rather than the store. The scripts
live in ``lua/`` beside them. Nothing here imports the server, the ASGI
layer, the CLI, upstreams, breakers or workers (checked by import-linter).
"""

from __future__ import annotations

from ._context import HasStoreContext, StoreContext
from ._draft import SessionDraft
from ._events import Event, EventConsumer, EventFollower, EventKind
from ._leases import Lease, TrackedFleetLease, TrackedLease
from ._listing import list_by_status
from ._lock import SessionLock
from ._models import (
    Session,
    SessionCounts,
    SessionStatus,
    ShardCounts,
    SweepResult,
    Tombstone,
)
from ._repair import RepairReport, repair_store
from ._store import Mutator, SessionStore, check_ttl
from ._sweep import SweepReport, sweep_shard, sweep_store

__all__ = [
    "Event",
    "EventConsumer",
    "EventFollower",
    "EventKind",
    "HasStoreContext",
    "Lease",
    "Mutator",
    "RepairReport",
    "Session",
    "SessionCounts",
    "SessionDraft",
    "SessionLock",
    "SessionStatus",
    "SessionStore",
    "ShardCounts",
    "StoreContext",
    "SweepReport",
    "SweepResult",
    "Tombstone",
    "TrackedFleetLease",
    "TrackedLease",
    "check_ttl",
    "list_by_status",
    "repair_store",
    "sweep_shard",
    "sweep_store",
]
