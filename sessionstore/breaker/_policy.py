"""The breaker's rules as pure functions: no I/O, no clock of their own.

`trip_cause` is the Python twin of the rule inside ``lua/breaker_record.lua``
(an integration test feeds both the same counts). `decide` is what a guarded
call does with the local view: pass without touching Redis, ask Redis for a
probe lease, or refuse. Times here are seconds on the caller's monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from ..settings import BreakerSettings
from ._model import BreakerState


def ms(value: timedelta) -> int:
    """A duration in whole milliseconds (at least 1), as the scripts take it."""
    return max(1, round(value.total_seconds() * 1000))


def bucket_ms(settings: BreakerSettings) -> int:
    """Length of one window bucket in milliseconds."""
    return max(1, ms(settings.window) // settings.window_buckets)


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Outcomes in a breaker's window (or in one batch)."""

    calls: int = 0
    failures: int = 0
    slow: int = 0


def trip_cause(counts: WindowCounts, settings: BreakerSettings) -> str | None:
    """Why a closed breaker with these window totals opens, or None if it stays closed.

    Same arithmetic as ``breaker_record.lua`` (IEEE doubles on both sides).
    """
    if counts.calls < settings.minimum_calls:
        return None
    if counts.failures >= settings.failure_rate_threshold * counts.calls:
        return "failure_rate"
    if (
        settings.slow_call_duration is not None
        and counts.slow >= settings.slow_call_rate_threshold * counts.calls
    ):
        return "slow_call_rate"
    return None


def is_slow(duration: float, settings: BreakerSettings) -> bool:
    """True when a call of `duration` seconds counts as slow."""
    limit = settings.slow_call_duration
    return limit is not None and duration >= limit.total_seconds()


class Verdict(StrEnum):
    """What a guarded call may do."""

    #: Go ahead; record the outcome (closed).
    ADMIT = "admit"
    #: Go ahead; record nothing (forced closed, or Redis down under fail_open).
    ADMIT_UNRECORDED = "admit_unrecorded"
    #: Ask Redis for a probe lease (open past its duration, or half-open).
    PROBE = "probe"
    #: Refuse with BreakerOpen(retry_after).
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict for one call, with a retry hint when it is a refusal."""

    verdict: Verdict
    #: Seconds, for REFUSE.
    retry_after: float = 0.0


_ADMIT = Decision(Verdict.ADMIT)
_ADMIT_UNRECORDED = Decision(Verdict.ADMIT_UNRECORDED)
_PROBE = Decision(Verdict.PROBE)


def effective_state(state: BreakerState, *, now: float, retry_at: float) -> BreakerState:
    """An open breaker whose open duration has passed is, for callers, half-open."""
    if state is BreakerState.OPEN and now >= retry_at:
        return BreakerState.HALF_OPEN
    return state


def decide(
    state: BreakerState,
    *,
    now: float,
    retry_at: float,
    refused_until: float,
    redis_up: bool,
    settings: BreakerSettings,
) -> Decision:
    """The local decision for one guarded call.

    Args:
        state: the state in the local view.
        now: the caller's monotonic clock.
        retry_at: when an open breaker may move to half-open (monotonic).
        refused_until: a cached half-open refusal holds until then (monotonic).
        redis_up: whether Redis answered the last breaker round trip.
        settings: thresholds and the Redis-down policy.
    """
    if not redis_up and settings.redis_down_policy == "fail_closed":
        return Decision(Verdict.REFUSE, settings.staleness_bound.total_seconds() / 2)
    if state is BreakerState.CLOSED:
        return _ADMIT if redis_up else _ADMIT_UNRECORDED
    if state is BreakerState.FORCED_CLOSED:
        return _ADMIT_UNRECORDED
    if state is BreakerState.FORCED_OPEN:
        # No deadline: an operator decides. Hint at one open period.
        return Decision(Verdict.REFUSE, settings.open_duration.total_seconds())
    if state is BreakerState.OPEN and now < retry_at:
        return Decision(Verdict.REFUSE, retry_at - now)
    if now < refused_until:
        return Decision(Verdict.REFUSE, refused_until - now)
    if not redis_up:
        # fail_open: no probe lease can be taken, and nothing refuses the call.
        return _ADMIT_UNRECORDED
    return _PROBE
