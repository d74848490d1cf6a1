"""Request and response bodies of the breaker endpoints (``/breakers``, ``/demo``).

Request bodies refuse unknown fields (``extra="forbid"``) and carry the same
bounds `BreakerAdmin` checks again before anything reaches Redis (actor 1-128
printable characters, reason at most 500), so every bad input is a clear 4xx.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..breaker import AuditEntry, BreakerEvent, BreakerSnapshot, BreakerState, BreakerStatus
from ..breaker._admin import MAX_ACTOR, MAX_REASON

#: No control characters: audit records stay one readable line.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

Actor = Annotated[str, Field(min_length=1, max_length=MAX_ACTOR, pattern=_PRINTABLE)]
Reason = Annotated[str, Field(max_length=MAX_REASON, pattern=_PRINTABLE)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class BreakerOut(BaseModel):
    """A breaker's state as Redis holds it (the same for every replica)."""

    name: str
    #: As stored; an ``open`` breaker past ``open_until`` moves to ``half_open``
    #: on the next call anywhere in the fleet (see ``effective_state``).
    state: BreakerState
    #: What a call would meet now: ``half_open`` for an ``open`` breaker past ``open_until``.
    effective_state: BreakerState
    #: Grows by one with every transition.
    generation: int
    changed_at: datetime | None
    open_until: datetime | None
    #: Why the last transition happened (failure_rate, force_open, reset...).
    cause: str | None
    #: Who made the last manual transition, and why.
    actor: str | None
    reason: str | None
    #: Automatic openings over the breaker's life.
    trips: int
    #: Redis time of this reading.
    read_at: datetime

    @classmethod
    def fields_of(cls, snapshot: BreakerSnapshot) -> dict[str, object]:
        """The snapshot's fields under this model's names."""
        elapsed = snapshot.state is BreakerState.OPEN and snapshot.now_ms >= snapshot.open_until_ms
        return {
            "name": snapshot.name,
            "state": snapshot.state,
            "effective_state": BreakerState.HALF_OPEN if elapsed else snapshot.state,
            "generation": snapshot.gen,
            "changed_at": snapshot.changed_at,
            "open_until": snapshot.open_until,
            "cause": snapshot.cause or None,
            "actor": snapshot.actor or None,
            "reason": snapshot.reason or None,
            "trips": snapshot.trips,
            "read_at": snapshot.read_at,
        }

    @classmethod
    def of(cls, snapshot: BreakerSnapshot) -> BreakerOut:
        """The API form of a snapshot."""
        return cls.model_validate(cls.fields_of(snapshot))


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
                **BreakerOut.fields_of(status),
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


class DemoCall(_Request):
    """Body of ``POST /demo/upstreams/{upstream}/call``: how the simulated upstream answers."""

    outcome: Literal["success", "failure"]


class DemoCallOut(BaseModel):
    """A guarded call to the simulated upstream that went through."""

    breaker: str
    outcome: Literal["success"]
    #: True when this call was one of the fleet's half-open probes.
    probe: bool
    #: This replica's view of the breaker after the call.
    state: BreakerState
