"""Fleet-wide upstream counters, kept by ``lua/upstream.lua`` in each shard's stats hash.

Every write to a connection record is that one script, on whatever replica or
worker made it, so counting there is exact and costs nothing extra: the
counters grow in the same atomic step as the record. Reading them is one
``HMGET`` per shard, pipelined (one round trip per node): O(shards), never a
scan of the sessions.

They are counters, not a census: records leave with their sessions (end,
expiry, sweep) inside the store's own scripts, which do not count them, so
"connections in each state right now" cannot be derived from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from .._scripts import Batch
from ._records import UpstreamState

if TYPE_CHECKING:
    from ..store import SessionStore

#: Stats-hash fields of the plain counters (the names ``upstream.lua`` increments).
_PLAIN = ("registered", "removed", "failed_attempts", "reconnected")


class UpstreamTotals(BaseModel):
    """Upstream counters over the store's life, summed over every shard.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Registrations (a name registered again counts again).
    registered: int = 0
    #: Records removed on purpose (not those that ended with their session).
    removed: int = 0
    #: Failed attempts written to records: an operation that spent its retries,
    #: or a reconnect job's attempt that failed (each one ``attempts + 1``).
    failed_attempts: int = 0
    #: Records that went from ``reconnecting`` back to ``connected``: reconnects
    #: that succeeded, by a reconnect job or by the replica's next call.
    reconnected: int = 0
    #: Changes of state, by the state changed to (registering is not one).
    transitions: dict[str, int] = {}

    @property
    def reconnect_attempts(self) -> int:
        """Attempts to get a failing connection back: the failed ones plus those that worked."""
        return self.failed_attempts + self.reconnected

    def report(self) -> dict[str, Any]:
        """The shape health reports show (``/session-health``, ``sessionstore health``)."""
        return {
            "registered": self.registered,
            "removed": self.removed,
            "reconnect_attempts": {"failed": self.failed_attempts, "succeeded": self.reconnected},
            "transitions": dict(self.transitions),
        }


def _fields() -> list[str]:
    return [f"upstream_{name}" for name in _PLAIN] + [
        f"upstream_to_{state.value}" for state in UpstreamState
    ]


async def read_upstream_totals(store: SessionStore) -> UpstreamTotals:
    """The counters of every shard, summed (one pipelined round trip per node).

    Raises:
        BackendUnavailable: Redis could not be reached.

    .. versionadded:: 0.1
    """
    fields = _fields()
    batch = Batch(store.redis)
    for shard in range(store.keys.shards):
        batch.command("HMGET", store.keys.stats(shard), *fields)
    sums = dict.fromkeys(fields, 0)
    for reply in await batch.execute():
        for field, value in zip(fields, reply, strict=True):
            sums[field] += int(value or 0)
    plain = {name: sums[f"upstream_{name}"] for name in _PLAIN}
    transitions = {s.value: sums[f"upstream_to_{s.value}"] for s in UpstreamState}
    return UpstreamTotals(**plain, transitions=transitions)
