"""Whether Redis answers the breakers, and logging an outage once, not per call.

Redis counts as down from the first failed breaker round trip (poll, flush,
probe, subscription) until the next one that succeeds. The Redis-down policy
(`BreakerSettings.redis_down_policy`) is applied by `_policy.decide`; this
module only keeps the facts and says so in the log: one WARNING when an
outage starts, one INFO when it ends.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from ..settings import BreakerRedisDownPolicy

logger = logging.getLogger("sessionstore.breaker")


class RedisHealth:
    """Reachability of Redis as the breakers of one process saw it."""

    def __init__(self, policy: BreakerRedisDownPolicy) -> None:
        self.policy = policy
        self.reachable = True
        self.down_since: datetime | None = None
        self.last_error: str | None = None
        #: Outcomes dropped because they could not be recorded, over the process's life.
        self.outcomes_dropped = 0
        self._down_at = 0.0
        self._dropped_at_start = 0

    def ok(self) -> None:
        """A breaker round trip succeeded."""
        if self.reachable:
            return
        self.reachable = True
        lasted = time.monotonic() - self._down_at
        logger.info(
            "Redis is reachable again after %.1f s; breakers are back in step "
            "(%d outcomes were not recorded during the outage)",
            lasted,
            self.outcomes_dropped - self._dropped_at_start,
        )
        self.down_since = None

    def failed(self, exc: BaseException) -> None:
        """A breaker round trip failed because Redis is unavailable."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self.reachable:
            return
        self.reachable = False
        self._down_at = time.monotonic()
        self._dropped_at_start = self.outcomes_dropped
        self.down_since = datetime.now(UTC)
        effect = (
            "guarded calls are refused"
            if self.policy == "fail_closed"
            else "guarded calls follow the last known state and are not recorded"
        )
        logger.warning(
            "Redis is unreachable for the circuit breakers (%s); policy %s: %s until it answers",
            self.last_error,
            self.policy,
            effect,
        )

    def dropped(self, count: int) -> None:
        """`count` outcomes could not be recorded."""
        self.outcomes_dropped += count
