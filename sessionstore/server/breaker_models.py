"""Request and response bodies of the breaker endpoints (``/breakers``).

Request bodies refuse unknown fields (``extra="forbid"``) and carry the same
bounds `BreakerAdmin` checks again before anything reaches Redis (actor 1-128
printable characters, reason at most 500), so every bad input is a clear 4xx.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer

from ..breaker import AuditEntry, BreakerEvent, BreakerSnapshot, BreakerState, BreakerStatus
from ..breaker._admin import MAX_ACTOR, MAX_REASON

#: No control characters: audit records stay one readable line.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

Actor = Annotated[str, Field(min_length=1, max_length=MAX_ACTOR, pattern=_PRINTABLE)]
Reason = Annotated[str, Field(max_length=MAX_REASON, pattern=_PRINTABLE)]


class _Request(BaseModel):
    # Strict: the schema's types, not pydantic's coercions (0 is no boolean, "30" no number).
    model_config = ConfigDict(extra="forbid", strict=True)


class BreakerAction(_Request):
    """Body of ``force-open`` and ``force-closed``: who acts and why (both recorded)."""

    #: Who acts (a person or a tool), kept in the breaker's audit stream.
    actor: Actor
    #: Why; required (not blank).
    reason: Annotated[Reason, Field(min_length=1)]


class BreakerReset(_Request):
    """Body of ``reset``: who acts and, optionally, why."""

    actor: Actor
    reason: Reason = ""


class BreakerOut(BreakerSnapshot):
    """A breaker's state as Redis holds it (the same for every replica): the snapshot's
    fields, its times as datetimes and empty texts as null."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    # Raw forms the API shows under other names (``generation``, ``changed_at``...).
    gen: int = Field(exclude=True)
    now_ms: int = Field(exclude=True)
    changed_at_ms: int = Field(default=0, exclude=True)
    open_until_ms: int = Field(default=0, exclude=True)
    successes: int = Field(default=0, exclude=True)

    @field_serializer("cause", "actor", "reason")
    def _blank_is_null(self, value: str) -> str | None:
        return value or None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_state(self) -> BreakerState:
        """What a call would meet now: ``half_open`` for an ``open`` breaker past
        ``open_until`` (it moves there on the next call anywhere in the fleet)."""
        return super().effective_state

    @computed_field  # type: ignore[prop-decorator]
    @property
    def generation(self) -> int:
        """Grows by one with every transition."""
        return self.gen

    @computed_field  # type: ignore[prop-decorator]
    @property
    def changed_at(self) -> datetime | None:
        """When the last transition happened (null: never left the initial closed state)."""
        return super().changed_at

    @computed_field  # type: ignore[prop-decorator]
    @property
    def open_until(self) -> datetime | None:
        """When an open breaker may move to half-open."""
        return super().open_until

    @computed_field  # type: ignore[prop-decorator]
    @property
    def read_at(self) -> datetime:
        """Redis time of this reading."""
        return super().read_at

    @classmethod
    def of(cls, snapshot: BreakerSnapshot) -> BreakerOut:
        """The API form of a snapshot."""
        return cls.model_validate(snapshot.model_dump(include=_SNAPSHOT_FIELDS))


#: The fields a `BreakerOut` takes from a snapshot (a status carries more).
_SNAPSHOT_FIELDS: set[str] = set(BreakerSnapshot.model_fields)


class WindowOut(BaseModel):
    """The fleet-wide sliding window (all replicas' outcomes)."""

    calls: int
    failures: int
    slow: int
    failure_rate: float | None
    slow_rate: float | None


class ProbesOut(BaseModel):
    """Half-open probes across the fleet."""

    in_flight: int
    #: Successful probes in this half-open period.
    succeeded: int
    #: Probes the fleet admits per half-open period (``half_open_probes``).
    allowed: int


class BreakerStatusOut(BreakerOut):
    """A breaker's state, window and probes."""

    window: WindowOut
    probes: ProbesOut

    @classmethod
    def of_status(cls, status: BreakerStatus, *, probes_allowed: int) -> BreakerStatusOut:
        """The API form of a status read."""
        return cls.model_validate(
            {
                **status.model_dump(include=_SNAPSHOT_FIELDS),
                "window": WindowOut(
                    calls=status.calls,
                    failures=status.failures,
                    slow=status.slow,
                    failure_rate=status.failure_rate,
                    slow_rate=status.slow_rate,
                ),
                "probes": ProbesOut(
                    in_flight=status.probes_in_flight,
                    succeeded=status.successes,
                    allowed=probes_allowed,
                ),
            }
        )


class LocalViewOut(BaseModel):
    """This replica's own view of a breaker: what its guarded calls go by.

    Kept current by push and polling (within the staleness bound); reading
    ``/breakers/{name}`` does not refresh it.
    """

    state: BreakerState
    generation: int
    changed_at: datetime | None


class BreakerList(BaseModel):
    """Every breaker used or steered within the retention period."""

    breakers: list[BreakerStatusOut]
    #: How many breakers Redis knows (more than listed when `limit` cut the list).
    known: int
    #: A replica's local view lags Redis by at most about this much.
    staleness_bound_seconds: float


class BreakerDetail(BaseModel):
    """One breaker: its state in Redis, this replica's view, recent history."""

    breaker: BreakerStatusOut
    #: None when this replica holds no local view of it (it never guarded a call to it).
    local: LocalViewOut | None
    #: Newest first: transitions and reclaimed probes.
    events: list[BreakerEvent]
    #: Newest first: manual actions with who, when and why.
    audit: list[AuditEntry]
