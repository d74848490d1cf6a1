"""`SessionSettings`: how sessions behave (lifetimes, limits, the key space)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._types import Duration


class SessionSettings(BaseModel):
    """How sessions behave: lifetimes, limits and the key space.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Every key the store writes starts with this prefix and a colon.
    key_prefix: str = Field(default="ss", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    #: Number of expiry-index shards. Session ids carry their shard, so this may
    #: grow in a running deployment but must never shrink.
    shards: int = Field(default=16, ge=1, le=1024)
    #: A session with no activity for this long expires.
    idle_timeout: Duration = timedelta(minutes=30)
    #: A session expires this long after creation, however active.
    absolute_lifetime: Duration = timedelta(hours=24)
    #: Tombstones of expired, closed and rotated ids answer for this long.
    expired_retention: Duration = timedelta(hours=24)
    #: An overdue session's record is kept at least this long for the sweeper to
    #: expire it (and emit its event) after worker downtime: Redis drops a record
    #: this long after its absolute deadline (its TTL, set at creation).
    sweep_grace: Duration = timedelta(hours=24)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    max_attribute_bytes: int = Field(default=64 * 1024, ge=2)
    max_state_bytes: int = Field(default=1024 * 1024, ge=2)
    max_attributes: int = Field(default=256, ge=1)
    #: Concurrent requests per session across the fleet (0 = unlimited).
    max_requests_per_session: int = Field(default=32, ge=0)
    #: Concurrent requests across the whole fleet (0 = unlimited).
    max_requests_global: int = Field(default=0, ge=0)
    #: A request lease lapses after this long unless renewed; a crashed
    #: replica's leases are reclaimed after it.
    request_lease_ttl: Duration = timedelta(seconds=60)
    lock_ttl: Duration = timedelta(seconds=30)
    #: Approximate bound on each shard's event stream.
    events_maxlen: int = Field(default=10_000, ge=10)
    #: Compare-and-set attempts `mutate` makes before giving up.
    mutate_max_attempts: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _check_durations(self) -> SessionSettings:
        for name in (
            "idle_timeout",
            "absolute_lifetime",
            "expired_retention",
            "sweep_grace",
            "request_lease_ttl",
            "lock_ttl",
        ):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self
