"""Value objects of the circuit breakers: states, outcomes, snapshots, history, health.

Redis holds times as epoch milliseconds (so Lua can compare them); snapshots
keep those numbers (``*_ms``) because the local view converts them to its own
monotonic clock, and offer aware UTC datetimes as properties.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from .._time import from_ms, ms_to_datetime
from ..settings import BreakerRedisDownPolicy


class BreakerState(StrEnum):
    """Where a breaker stands, as stored in Redis.

    .. versionadded:: 0.1
    """

    #: Calls pass; outcomes fill the fleet-wide window.
    CLOSED = "closed"
    #: Calls are refused until the open duration has passed.
    OPEN = "open"
    #: A fixed number of probes may pass; their outcomes decide.
    HALF_OPEN = "half_open"
    #: Isolated by an operator: every call is refused until reset.
    FORCED_OPEN = "forced_open"
    #: Held closed by an operator: every call passes, nothing is recorded.
    FORCED_CLOSED = "forced_closed"


class Outcome(StrEnum):
    """What a guarded call tells its breaker.

    .. versionadded:: 0.1
    """

    SUCCESS = "success"
    FAILURE = "failure"
    #: Not the upstream's fault (bad input, wrong password...): not counted.
    IGNORED = "ignored"


class BreakerSnapshot(BaseModel):
    """A breaker's state as a script read or announced it.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    state: BreakerState
    #: Grows by one with every transition; outcomes carry the generation they saw.
    gen: int
    #: Redis time when this snapshot was taken (orders snapshots of one breaker).
    now_ms: int
    changed_at_ms: int = 0
    #: When an open breaker may move to half-open (0 unless open).
    open_until_ms: int = 0
    #: Successful probes so far in this half-open period.
    successes: int = 0
    #: Why the last transition happened: failure_rate, slow_call_rate,
    #: open_elapsed, probe_failed, probes_succeeded, force_open, force_closed, reset.
    cause: str = ""
    #: Who made the last manual transition, and why ("" for automatic ones).
    actor: str = ""
    reason: str = ""
    #: Automatic openings over the breaker's life.
    trips: int = 0

    @property
    def changed_at(self) -> datetime | None:
        """When the last transition happened (None: never left the initial closed state)."""
        return from_ms(self.changed_at_ms or None)

    @property
    def open_until(self) -> datetime | None:
        """When an open breaker may move to half-open."""
        return from_ms(self.open_until_ms or None)

    @property
    def read_at(self) -> datetime:
        """Redis time of this snapshot."""
        return ms_to_datetime(self.now_ms)

    @property
    def effective_state(self) -> BreakerState:
        """What a call would meet now: an ``open`` breaker past `open_until` moves to
        ``half_open`` on the next call anywhere in the fleet."""
        if self.state is BreakerState.OPEN and self.now_ms >= self.open_until_ms:
            return BreakerState.HALF_OPEN
        return self.state

    def is_newer_than(self, other: BreakerSnapshot | None) -> bool:
        """True when this snapshot should replace `other` in a local view.

        Pushes and replies travel on different connections, so an older one
        may arrive later and must lose. A later generation always wins (even
        if a failover moved Redis time back); otherwise a strictly later Redis
        time does, since the scripts of one breaker run one at a time on one
        Redis (that also lets a breaker whose keys were lost, generation 0
        again, be learned anew); the same generation at the same time is the
        same news.
        """
        if other is None:
            return True
        if self.gen > other.gen or self.now_ms > other.now_ms:
            return True
        return (self.gen, self.now_ms) == (other.gen, other.now_ms)


class BreakerStatus(BreakerSnapshot):
    """A snapshot plus the window totals and live probe leases (`show`, polls).

    .. versionadded:: 0.1
    """

    calls: int = 0
    failures: int = 0
    slow: int = 0
    probes_in_flight: int = 0

    @property
    def failure_rate(self) -> float | None:
        """Failures / calls in the window (None before any call)."""
        return self.failures / self.calls if self.calls else None

    @property
    def slow_rate(self) -> float | None:
        """Slow calls / calls in the window (None before any call)."""
        return self.slow / self.calls if self.calls else None

    @property
    def known(self) -> bool:
        """False when Redis holds nothing about this breaker."""
        return bool(self.gen or self.calls or self.probes_in_flight)


class BreakerEvent(BaseModel):
    """One entry of a breaker's event stream (``XREVRANGE``).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    id: str
    #: ``transition`` or ``probe_reclaimed``.
    kind: str
    at: datetime
    #: The entry's other fields (from, to, cause, gen, actor, reason, count).
    fields: dict[str, str]


class AuditEntry(BaseModel):
    """One manual action from a breaker's audit stream.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    id: str
    action: str
    actor: str
    reason: str
    at: datetime
    from_state: BreakerState
    to_state: BreakerState
    gen: int


class BreakerHealth(BaseModel):
    """What a process's breakers know about Redis, for a health endpoint.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    redis_reachable: bool
    #: Since when Redis has been unreachable (None while reachable).
    down_since: datetime | None
    last_error: str | None
    #: What guarded calls do while Redis is unreachable.
    policy: BreakerRedisDownPolicy
    #: True while the pub/sub subscription is live (else polling alone keeps views fresh).
    push_live: bool
    staleness_bound: timedelta
    #: Outcomes that could not be recorded because Redis was unreachable.
    outcomes_dropped: int
    #: Each breaker's state in this process's local view.
    breakers: dict[str, BreakerState]
