"""Shard-wide counts: active, overdue and lifetime totals.

Counts come from each shard's expiry index and stats hash, read with one script
per shard, all pipelined, never SCAN: the index's time buckets keep their counts
in a hash, so a shard's entries are the sum of its counts, and the due ones the
counts of the buckets that end by now plus a ZCOUNT of each bucket that covers
now (at most one per level; docs/keys.md, "The expiry index"). The index
is lazy (a slide leaves a session's entry where it was written), so a due entry
may be an active session's until the next sweep pass moves it: `overdue` counts
due entries, the records are not read (docs/workers.md).
"""

from __future__ import annotations

from .._scripts import Batch
from .._time import from_ms, ms_to_datetime
from ._context import StoreContext
from ._lua import script
from ._models import SessionCounts, ShardCounts, parse_pairs

_TOTALS = ("created", "expired", "closed", "rotated", "resumed")


async def counts(store: StoreContext) -> SessionCounts:
    """Active, overdue and lifetime counts over all shards, in one round trip per node.

    .. versionadded:: 0.1
    """
    batch = Batch(store.redis)
    for shard in range(store.keys.shards):
        batch.script(script("shard_stats"), [store.keys.expiry(shard), store.keys.stats(shard)], [])
    shards = []
    now_ms = 0
    for shard, reply in enumerate(await batch.execute()):
        now_ms = max(now_ms, int(reply[0]))
        stats = parse_pairs(reply[4:])
        shards.append(
            ShardCounts(
                shard=shard,
                live=int(reply[1]),
                overdue=int(reply[2]),
                oldest_overdue=from_ms(reply[3] or None),
                totals={name: int(stats.get(name, 0)) for name in _TOTALS},
            )
        )
    oldest = [s.oldest_overdue for s in shards if s.oldest_overdue is not None]
    return SessionCounts(
        at=ms_to_datetime(now_ms),
        active=sum(s.live for s in shards),
        overdue=sum(s.overdue for s in shards),
        oldest_overdue=min(oldest) if oldest else None,
        totals={name: sum(s.totals[name] for s in shards) for name in _TOTALS},
        shards=shards,
    )
