"""A process's local view of one breaker: the last snapshot and its deadlines.

Guarded calls read only this. Redis time is never compared with the local
clock: when a snapshot arrives, "open until" is turned into a deadline on the
local monotonic clock from the snapshot's own Redis time (the delivery delay,
about a round trip, is the only error).
"""

from __future__ import annotations

import math

from ..settings import BreakerSettings
from ._model import BreakerSnapshot, BreakerState
from ._policy import Decision, decide, effective_state


class LocalView:
    """The state of one breaker as this process last learned it."""

    def __init__(self, snapshot: BreakerSnapshot, received: float, *, confirmed: bool) -> None:
        self.snapshot = snapshot
        #: Monotonic time an open breaker may move to half-open.
        self.retry_at = 0.0
        #: Monotonic time until which a half-open refusal is cached.
        self.refused_until = 0.0
        #: Monotonic time Redis last confirmed this view (-inf: never).
        self.confirmed_at = -math.inf
        self._set(snapshot, received)
        if not confirmed:
            self.confirmed_at = -math.inf

    def _set(self, snapshot: BreakerSnapshot, received: float) -> None:
        self.snapshot = snapshot
        self.confirmed_at = received
        self.retry_at = 0.0
        if snapshot.state is BreakerState.OPEN:
            self.retry_at = received + max(0, snapshot.open_until_ms - snapshot.now_ms) / 1000

    def apply(self, snapshot: BreakerSnapshot, received: float) -> bool:
        """Take `snapshot` if it is not older than the view; True if the state changed."""
        if not snapshot.is_newer_than(self.snapshot):
            return False
        old = self.snapshot
        changed = (snapshot.gen, snapshot.state) != (old.gen, old.state)
        if changed:
            self.refused_until = 0.0
        self._set(snapshot, received)
        return changed

    def refuse_until(self, until: float) -> None:
        """Cache a half-open refusal until `until` (monotonic)."""
        self.refused_until = until

    def state(self, now: float) -> BreakerState:
        """The state callers see (an elapsed open breaker reads half-open)."""
        return effective_state(self.snapshot.state, now=now, retry_at=self.retry_at)

    def decide(self, now: float, *, redis_up: bool, settings: BreakerSettings) -> Decision:
        """What a guarded call may do now; see `_policy.decide`."""
        return decide(
            self.snapshot.state,
            now=now,
            retry_at=self.retry_at,
            refused_until=self.refused_until,
            redis_up=redis_up,
            settings=settings,
        )

    def is_stale(self, now: float, max_age: float) -> bool:
        """True when Redis has not confirmed the view for `max_age` seconds."""
        return now - self.confirmed_at >= max_age
