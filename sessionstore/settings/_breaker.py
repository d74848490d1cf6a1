"""`BreakerSettings`: how the fleet-shared circuit breakers judge an upstream."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._types import Duration, EmptyIsNone

BreakerRedisDownPolicy = Literal["fail_open", "fail_closed"]


class BreakerSettings(BaseModel):
    """How the fleet-shared circuit breakers judge an upstream (see docs/breaker.md).

    Every replica must use the same values: the Lua scripts take them as
    arguments and judge the shared window by the caller's rule.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Trip when failures / calls in the window reaches this.
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    #: No judgement before this many calls in the window.
    minimum_calls: int = Field(default=10, ge=1)
    #: Length of the sliding window, split into `window_buckets` time buckets.
    window: Duration = timedelta(seconds=60)
    window_buckets: int = Field(default=6, ge=1, le=60)
    #: A call at least this long counts as slow; None turns slow-call judgement off.
    slow_call_duration: EmptyIsNone[Duration] = None
    #: Trip when slow / calls reaches this (only with `slow_call_duration`).
    slow_call_rate_threshold: float = Field(default=0.8, gt=0, le=1)
    #: How long an open breaker refuses calls before it moves to half-open.
    open_duration: Duration = timedelta(seconds=30)
    #: Probes the whole fleet admits in half-open; that many successes close it.
    half_open_probes: int = Field(default=3, ge=1, le=1000)
    #: A probe's lease deadline: a dead prober's slot is reclaimed after it.
    probe_lease_ttl: Duration = timedelta(seconds=30)
    #: A replica's local view is at most this old while Redis is reachable
    #: (it polls every half of it when no push or reply confirmed the state).
    staleness_bound: Duration = timedelta(seconds=1)
    #: Outcomes are batched for this long; zero records each one inline.
    record_flush_interval: Duration = timedelta(milliseconds=20)
    #: What guarded calls do while Redis is unreachable.
    redis_down_policy: BreakerRedisDownPolicy = "fail_open"
    #: Approximate cap of each breaker's event stream.
    events_maxlen: int = Field(default=1000, ge=10)
    #: Exact cap of each breaker's audit stream (manual actions).
    audit_maxlen: int = Field(default=100, ge=1)
    #: A breaker's keys live this long after the last process stopped using it.
    retention: Duration = timedelta(days=7)

    @model_validator(mode="after")
    def _check_durations(self) -> BreakerSettings:
        for name in ("window", "open_duration", "probe_lease_ttl", "staleness_bound", "retention"):
            if getattr(self, name) < timedelta(milliseconds=1):
                raise ValueError(f"{name} must be at least 1 ms")
        if self.window < timedelta(milliseconds=self.window_buckets):
            raise ValueError("window must be at least 1 ms per bucket")
        if self.slow_call_duration is not None and self.slow_call_duration <= timedelta(0):
            raise ValueError("slow_call_duration must be positive (or unset)")
        if self.record_flush_interval < timedelta(0):
            raise ValueError("record_flush_interval must not be negative")
        return self
