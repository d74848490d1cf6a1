"""Shard-wide reads and batch transitions: counts and expiry sweeps.

Counts come from each shard's expiry index (ZCOUNT, O(log n)) and stats hash,
read with one script per shard, all pipelined: O(shards), never SCAN. A sweep
batch expires the due head of one shard's index in one atomic script, so its
cost grows with the number of due sessions, not live ones, and two workers
sweeping the same shard never expire a session twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._models import (
    SessionCounts,
    ShardCounts,
    SweepResult,
    from_ms,
    ms_to_datetime,
    parse_pairs,
    to_ms,
)
from ._scripts import Arg, Batch, call, script

if TYPE_CHECKING:
    from ._store import SessionStore

_TOTALS = ("created", "expired", "closed", "rotated", "resumed")


async def counts(store: SessionStore) -> SessionCounts:
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


async def sweep_shard(store: SessionStore, shard: int, *, batch: int = 500) -> SweepResult:
    """Expire up to `batch` due sessions of `shard` in one atomic script.

    Each expired session gets its tombstone, loses its leases, lock and
    upstream records, is counted and emits an ``expired`` event, all inside the
    same script.

    .. versionadded:: 0.1
    """
    cfg = store.settings
    prefixes = store.keys.session_prefixes(shard)
    args: list[Arg] = [
        batch,
        to_ms(cfg.expired_retention),
        cfg.events_maxlen,
        prefixes["session"],
        prefixes["tomb"],
        prefixes["requests"],
        prefixes["conns"],
        prefixes["lock"],
        prefixes["upstreams"],
    ]
    keys = [store.keys.expiry(shard), store.keys.stats(shard), store.keys.events(shard)]
    reply = await call(store.redis, script("sweep"), keys, args)
    return SweepResult(
        shard=shard,
        expired=int(reply[0]),
        lost=int(reply[1]),
        rescheduled=int(reply[2]),
        still_due=int(reply[3]),
    )
