"""Shard-wide reads and batch transitions: counts and expiry sweeps.

Counts come from each shard's expiry index (ZCOUNT, O(log n)) and stats hash,
read with one script per shard, all pipelined: O(shards), never SCAN. A sweep
batch expires the due head of one shard's index in one atomic script, so its
cost grows with the number of due sessions, not live ones, and two workers
sweeping the same shard never expire a session twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

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
_NO_DELAY = timedelta(0)


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


def sweep_call(
    store: SessionStore, shard: int, *, batch: int, min_overdue_ms: int = 0
) -> tuple[list[str], list[Arg]]:
    """Keys and arguments of one ``sweep`` script call on `shard` (see lua/sweep.lua)."""
    cfg = store.settings
    args: list[Arg] = [
        batch,
        to_ms(cfg.expired_retention),
        cfg.events_maxlen,
        *store.keys.session_prefix_args(shard),
        min_overdue_ms,
    ]
    keys = [store.keys.expiry(shard), store.keys.stats(shard), store.keys.events(shard)]
    return keys, args


def sweep_result(shard: int, reply: list[Any]) -> SweepResult:
    """The `SweepResult` of a ``sweep`` script reply."""
    return SweepResult(
        shard=shard,
        expired=int(reply[0]),
        lost=int(reply[1]),
        rescheduled=int(reply[2]),
        still_due=int(reply[3]),
        removed=int(reply[6]),
    )


async def sweep_shard(
    store: SessionStore, shard: int, *, batch: int = 500, min_overdue: timedelta = _NO_DELAY
) -> SweepResult:
    """Expire up to `batch` due sessions of `shard` in one atomic script.

    Each expired session gets its tombstone, loses its leases, lock and
    upstream records, is counted and emits an ``expired`` event, all inside the
    same script. With `min_overdue`, only sessions due by at least that long
    are taken (the aggressive start-up pass). Whole-store sweeps in rounds
    live in ``_sweeper.py``.

    .. versionadded:: 0.1
    """
    overdue_ms = int(min_overdue.total_seconds() * 1000)
    keys, args = sweep_call(store, shard, batch=batch, min_overdue_ms=overdue_ms)
    return sweep_result(shard, await call(store.redis, script("sweep"), keys, args))
