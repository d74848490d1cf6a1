"""Exponential backoff with jitter, and the testing switch that zeroes it.

`BackoffPolicy.delay` is pure: the wait after the n-th failed attempt. The
ceiling grows as ``initial_delay * multiplier ** (n - 1)`` up to `max_delay`
(the mail client's defaults: 1 s, 2 s, 4 s... up to 30 s). Jitter spreads a fleet of clients
apart so they do not reconnect in lockstep:

- ``full``: uniform in ``[0, ceiling]`` (AWS "Exponential Backoff And Jitter");
- ``decorrelated``: uniform in ``[initial, 3 * previous]``, capped at
  `max_delay`, so each wait depends on the last one rather than on the count;
- ``none``: exactly the ceiling (for docs and deterministic tests).

Tests call `set_testing(True)` (an autouse fixture resets it) so that retry
loops and reconnect jobs wait zero seconds while still counting attempts,
like ``stamina.set_testing``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Jitter(StrEnum):
    """How a backoff delay is randomised.

    .. versionadded:: 0.1
    """

    #: Exactly the exponential ceiling.
    NONE = "none"
    #: Uniform between zero and the ceiling.
    FULL = "full"
    #: Uniform between the initial delay and three times the previous delay.
    DECORRELATED = "decorrelated"


class BackoffPolicy(BaseModel):
    """Attempts and waits for one upstream operation.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Total attempts, the first included (a mail client's ``max_retries``).
    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(seconds=30)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter: Jitter = Jitter.FULL

    @model_validator(mode="after")
    def _check_delays(self) -> BackoffPolicy:
        if self.initial_delay < timedelta(0) or self.max_delay < self.initial_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")
        return self

    def ceiling(self, attempt: int) -> float:
        """The un-jittered wait in seconds after failed attempt `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        initial = self.initial_delay.total_seconds()
        cap = self.max_delay.total_seconds()
        # Stop growing once past the cap, so huge attempt numbers cannot overflow.
        exponent = min(attempt - 1, 64)
        return min(cap, initial * self.multiplier**exponent)

    def delay(
        self, attempt: int, *, previous: float | None = None, rng: random.Random | None = None
    ) -> float:
        """The wait in seconds after failed attempt `attempt` (1-based).

        Args:
            attempt: how many attempts have failed so far.
            previous: the previous wait (decorrelated jitter builds on it).
            rng: a random source (tests pass a seeded one).
        """
        ceiling = self.ceiling(attempt)
        draw = rng or random
        if self.jitter is Jitter.FULL:
            return draw.uniform(0.0, ceiling)
        if self.jitter is Jitter.DECORRELATED:
            initial = self.initial_delay.total_seconds()
            cap = self.max_delay.total_seconds()
            last = initial if previous is None else max(previous, initial)
            return min(cap, draw.uniform(initial, max(initial, last * 3)))
        return ceiling

    def delays(self, *, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between the attempts: ``max_attempts - 1`` of them."""
        previous: float | None = None
        for attempt in range(1, self.max_attempts):
            previous = self.delay(attempt, previous=previous, rng=rng)
            yield previous

    def wait(self, attempt: int, *, previous: float | None = None) -> float:
        """Like `delay`, but zero while `set_testing` is on: what callers really wait."""
        if is_testing():
            return 0.0
        return self.delay(attempt, previous=previous)


# The one process-wide switch: private, lock-guarded, changed only through
# set_testing() and reset by an autouse fixture in tests/conftest.py.
_lock = threading.Lock()
_testing = False


def set_testing(testing: bool) -> None:
    """Make every backoff wait zero seconds (tests only).

    Attempts are still counted and classified; only the waiting is skipped.

    .. versionadded:: 0.1
    """
    global _testing
    with _lock:
        _testing = testing


def is_testing() -> bool:
    """True while `set_testing(True)` is in force.

    .. versionadded:: 0.1
    """
    with _lock:
        return _testing
