"""Value objects the store returns: sessions, tombstones, counts, leases.

All are frozen pydantic models. Redis holds times as epoch milliseconds (so
Lua can compare them); these models hold aware UTC datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

from .._time import from_ms, ms_to_datetime
from ._payload import decode_json


class SessionStatus(StrEnum):
    """Where a session id stands. Derived in one place: `status_of`."""

    #: The session can be used.
    ACTIVE = "active"
    #: A deadline passed (idle or absolute); `resume` issues a successor.
    EXPIRED = "expired"
    #: Deleted by a client or operator; cannot be resumed.
    CLOSED = "closed"
    #: The id was rotated; the session lives on under `superseded_by`.
    ROTATED = "rotated"


def _opt(value: str | None) -> str | None:
    return value or None


class Session(BaseModel):
    """A live or overdue session as read from its Redis hash.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: SessionStatus
    user_id: str | None = None
    conversation_id: str | None = None
    created_at: datetime
    last_activity: datetime
    idle_timeout: timedelta
    idle_deadline: datetime
    absolute_deadline: datetime
    metadata: dict[str, JsonValue]
    state: dict[str, JsonValue]
    #: Grows by one with every state or metadata write (compare-and-set target).
    version: int
    #: The newest lock fence granted on this session.
    fence: int
    #: Live connection leases (long-lived streams) across the fleet.
    connection_count: int
    #: Live request leases across the fleet.
    active_requests: int
    resumed_from: str | None = None
    rotated_from: str | None = None

    @property
    def expires_at(self) -> datetime:
        """The earlier of the idle and absolute deadlines."""
        return min(self.idle_deadline, self.absolute_deadline)

    @classmethod
    def from_reply(cls, reply: list[Any]) -> Session:
        """Build from a script's record reply: ``[tag, now, session_id, [field, value, ...]]``."""
        return cls.from_record(str(reply[2]), parse_pairs(reply[3]), now_ms=int(reply[1]))

    @classmethod
    def from_record(cls, session_id: str, fields: Mapping[str, str], *, now_ms: int) -> Session:
        """Build from a session hash (``HGETALL``) read at Redis time `now_ms`.

        Fields with nothing to say are left out of the hash and read as empty, and a
        record without a `version` is at version 1.
        The field names are short (docs/keys.md): ``created``, ``idle_ms`` (the idle
        timeout), ``idle_end`` and ``life_end`` (the idle and absolute deadlines).
        `last_activity` is ``idle_end - idle_ms`` (every write that moves one moves
        the other), so it is derived rather than stored.
        The request and connection leases are the record's ``r``/``c`` slots and
        ``r:``/``c:`` fields (`live_leases`), each with its deadline: those still
        ahead of `now_ms` are live (a crashed holder's lapsed ones stay until the next
        lease is taken, but do not count).
        """
        state: dict[str, JsonValue] = {
            name[2:]: decode_json(value) for name, value in fields.items() if name[:2] == "a:"
        }
        idle_end, life_end = int(fields["idle_end"]), int(fields["life_end"])
        idle_timeout = timedelta(milliseconds=int(fields["idle_ms"]))
        idle_deadline = ms_to_datetime(idle_end)
        overdue = now_ms >= min(idle_end, life_end)
        requests, connections = live_leases(fields, now_ms)
        metadata = fields.get("metadata")
        # A dict validated as a whole costs less than keyword arguments; the last
        # activity is the idle deadline less the timeout (exact: both are whole ms).
        return cls.model_validate(
            {
                "id": session_id,
                "status": SessionStatus.EXPIRED if overdue else SessionStatus.ACTIVE,
                "user_id": _opt(fields.get("user_id")),
                "conversation_id": _opt(fields.get("conversation_id")),
                "created_at": ms_to_datetime(fields["created"]),
                "last_activity": idle_deadline - idle_timeout,
                "idle_timeout": idle_timeout,
                "idle_deadline": idle_deadline,
                "absolute_deadline": ms_to_datetime(life_end),
                "metadata": json.loads(metadata) if metadata else {},
                "state": state,
                "version": int(fields.get("version") or 1),
                "fence": int(fields.get("fence") or 0),
                "connection_count": connections,
                "active_requests": requests,
                "resumed_from": _opt(fields.get("resumed_from")),
                "rotated_from": _opt(fields.get("rotated_from")),
            }
        )


class Tombstone(BaseModel):
    """What an ended id answers with during the retention period.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: SessionStatus
    #: 'idle', 'lifetime', 'lost', 'manual', 'deleted' or 'rotated'.
    reason: str
    ended_at: datetime
    user_id: str | None = None
    conversation_id: str | None = None
    created_at: datetime | None = None
    superseded_by: str | None = None

    @classmethod
    def from_record(cls, session_id: str, fields: dict[str, str]) -> Tombstone:
        """Build from a tombstone hash."""
        return cls(
            id=session_id,
            status=SessionStatus(fields["status"]),
            reason=fields.get("reason", ""),
            ended_at=ms_to_datetime(fields["ended_at"]),
            user_id=_opt(fields.get("user_id")),
            conversation_id=_opt(fields.get("conversation_id")),
            created_at=from_ms(fields.get("created_at")),
            superseded_by=_opt(fields.get("superseded_by")),
        )


class ShardCounts(BaseModel):
    """Counts of one expiry shard (see `SessionCounts`)."""

    model_config = ConfigDict(frozen=True)

    shard: int
    live: int
    overdue: int
    oldest_overdue: datetime | None
    totals: dict[str, int]


class SessionCounts(BaseModel):
    """Fleet-wide session counts, read in O(shards) without SCAN.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    at: datetime
    #: Sessions whose expiry-index entries are still ahead. A slide leaves the entry
    #: where it was written, so a session that was active since counts as `overdue`
    #: once that entry comes due, until the next sweep pass moves it (docs/workers.md).
    active: int
    #: Index entries that came due and that no sweep pass has handled yet: sessions past
    #: a deadline, and active sessions whose entry a slide left behind.
    overdue: int
    #: The oldest due entry: how far the sweeper lags (None if none is due). Entries are
    #: never later than their session's deadline, so it never reads low.
    oldest_overdue: datetime | None
    #: Lifetime counters: created, expired, closed, rotated, resumed.
    totals: dict[str, int]
    shards: list[ShardCounts]

    @property
    def sweeper_lag(self) -> timedelta:
        """How long the oldest overdue session has waited (zero when none)."""
        if self.oldest_overdue is None:
            return timedelta(0)
        return max(self.at - self.oldest_overdue, timedelta(0))


class SweepResult(BaseModel):
    """What one sweep batch of one shard did."""

    model_config = ConfigDict(frozen=True)

    shard: int
    expired: int
    #: Of `expired`: records Redis had already dropped after the sweep grace.
    lost: int
    #: Index entries that lagged behind a touch and were moved to the right deadline.
    rescheduled: int
    #: Due sessions left in the shard after this batch.
    still_due: int
    #: Index entries of ids that had already ended (a tombstone was there), dropped.
    removed: int = 0


#: The record's lease fields: a kind's first lease in its slot, ``r`` (request) / ``c``
#: (connection) = ``"<lease id> <deadline>"`` (``""`` once returned); a lease taken
#: beside a live slot's in a field of its own, ``r:<lease id>`` / ``c:<lease id>`` = its
#: deadline, with how many of those each kind has (there only while not 0), so that a
#: record without them is not looked through for them.
REQUEST_SLOT, CONNECTION_SLOT = "r", "c"
REQUEST_LEASE, CONNECTION_LEASE = "r:", "c:"
LEASE_COUNTS = ("request_leases", "conn_leases")


def live_leases(fields: Mapping[str, str], now_ms: int) -> tuple[int, int]:
    """The live request and connection leases in a session record at `now_ms`."""
    requests = _slot_live(fields.get(REQUEST_SLOT), now_ms)
    connections = _slot_live(fields.get(CONNECTION_SLOT), now_ms)
    if LEASE_COUNTS[0] not in fields and LEASE_COUNTS[1] not in fields:
        return requests, connections
    for name, value in fields.items():
        kind = name[:2]
        if kind == REQUEST_LEASE:
            requests += int(value) > now_ms
        elif kind == CONNECTION_LEASE:
            connections += int(value) > now_ms
    return requests, connections


def _slot_live(slot: str | None, now_ms: int) -> int:
    """1 if a lease slot's value (``"<lease id> <deadline>"``) holds a live lease."""
    if not slot:
        return 0
    return int(int(slot[slot.index(" ") + 1 :]) > now_ms)


def parse_pairs(flat: list[Any]) -> dict[str, str]:
    """A flat ``[field, value, ...]`` reply to a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
