"""Outcomes waiting to be flushed: per breaker and generation, just three counters.

Batching is what keeps recording at most one round trip per call: however
many calls end within one flush interval, each breaker costs one script call
and all of them travel in one pipelined round trip (one per node on a
cluster). The generation travels with the counts so that outcomes observed
before a transition never land in the next period's window.
"""

from __future__ import annotations

from ._policy import WindowCounts
from ._remote import PendingRecord


class OutcomeBuffer:
    """Counters of outcomes not yet sent to Redis."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], list[int]] = {}
        #: Outcomes currently buffered.
        self.size = 0

    def add(self, name: str, gen: int, *, failure: bool, slow: bool) -> None:
        """Count one finished call of breaker `name` seen in generation `gen`."""
        counters = self._pending.get((name, gen))
        if counters is None:
            counters = self._pending[(name, gen)] = [0, 0, 0]
        counters[0] += 1
        counters[1] += failure
        counters[2] += slow
        self.size += 1

    def take(self) -> list[PendingRecord]:
        """Everything buffered, as one record per breaker and generation; empties the buffer."""
        items = [
            PendingRecord(name, gen, WindowCounts(c[0], c[1], c[2]))
            for (name, gen), c in self._pending.items()
        ]
        self._pending = {}
        self.size = 0
        return items
