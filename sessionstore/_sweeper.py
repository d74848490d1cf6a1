"""Sweeping the whole store: every shard, in rounds of atomic batches.

One round sends one ``sweep`` script per shard that still has due sessions,
pipelined (`Batch`: one round trip per node). Each script expires up to a
batch of its shard's due head atomically, so a run's cost grows with the
number of due sessions, never with the live ones, and any number of workers
may sweep at once without expiring a session twice. A run ends when nothing
is due, or at its budget (entries handled, time), leaving the rest for the
next run: after downtime, successive runs catch up oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from ._models import ms_to_datetime
from ._scripts import Batch, script
from ._shards import sweep_call, sweep_result
from .exceptions import InvalidInput

if TYPE_CHECKING:
    from ._store import SessionStore

#: Why a sweep run ended.
StopReason = Literal["done", "max_sessions", "time_budget"]


class SweepReport(BaseModel):
    """What one sweep run over every shard did.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Redis time of the first and the last batch.
    started_at: datetime
    finished_at: datetime
    #: Only sessions due by at least this long were taken (zero: every due one).
    min_overdue: timedelta
    #: Rounds of pipelined scripts (one script per shard still due, per round).
    rounds: int
    #: Sessions expired (tombstone, event, counters), `lost` included.
    expired: int
    #: Of `expired`: records Redis had already dropped after the sweep grace.
    lost: int
    #: Index entries that lagged behind a touch, moved to the record's deadline.
    rescheduled: int
    #: Index entries of ids that had already ended, dropped.
    removed: int
    #: Entries still due (by `min_overdue`) when the run stopped.
    still_due: int
    stopped: StopReason

    @property
    def handled(self) -> int:
        """Index entries this run took off the due head."""
        return self.expired + self.rescheduled + self.removed


async def sweep_store(
    store: SessionStore,
    *,
    batch: int = 500,
    max_sessions: int = 50_000,
    time_budget: timedelta | None = None,
    min_overdue: timedelta = timedelta(0),
    clock: Callable[[], float] = time.monotonic,
) -> SweepReport:
    """Expire due sessions of every shard until none is due or a budget is spent.

    Args:
        store: the store to sweep.
        batch: sessions per shard per atomic script.
        max_sessions: stop once this many index entries were handled.
        time_budget: stop taking new rounds after this long (keep it well inside
            the job timeout of whatever runs the sweep).
        min_overdue: take only sessions due by at least this long.
        clock: monotonic seconds, for the time budget (tests inject one).

    Raises:
        InvalidInput: a non-positive batch or budget.
        BackendUnavailable: Redis did not answer; what was swept stays swept.

    .. versionadded:: 0.1
    """
    if batch < 1 or max_sessions < 1 or min_overdue < timedelta(0):
        raise InvalidInput("batch and max_sessions must be positive, min_overdue not negative")
    overdue_ms = int(min_overdue.total_seconds() * 1000)
    started = clock()
    pending = list(range(store.keys.shards))
    totals = {"expired": 0, "lost": 0, "rescheduled": 0, "removed": 0}
    still_due: dict[int, int] = {}
    first_ms = last_ms = 0
    rounds = 0
    stopped: StopReason = "done"
    while pending:
        remaining = max_sessions - (totals["expired"] + totals["rescheduled"] + totals["removed"])
        if remaining <= 0:
            stopped = "max_sessions"
            break
        if time_budget is not None and rounds and clock() - started >= time_budget.total_seconds():
            stopped = "time_budget"
            break
        calls = Batch(store.redis)
        # Split what is left of the budget among the shards, so a run never handles more.
        allotted = []
        for shard in pending:
            size = min(batch, remaining)
            if size == 0:
                break
            allotted.append(shard)
            remaining -= size
            keys, args = sweep_call(store, shard, batch=size, min_overdue_ms=overdue_ms)
            calls.script(script("sweep"), keys, args)
        replies = await calls.execute()
        rounds += 1
        handled_this_round = 0
        for shard, reply in zip(allotted, replies, strict=True):
            result = sweep_result(shard, reply)
            last_ms = max(last_ms, int(reply[4]))
            first_ms = first_ms or int(reply[4])
            for name in totals:
                totals[name] += getattr(result, name)
            handled_this_round += result.expired + result.rescheduled + result.removed
            still_due[shard] = result.still_due
        pending = [shard for shard in pending if still_due.get(shard, 1) > 0]
        if handled_this_round == 0:
            break  # nothing could be taken (entries moved meanwhile): leave it to the next run
    return SweepReport(
        started_at=ms_to_datetime(first_ms),
        finished_at=ms_to_datetime(last_ms),
        min_overdue=min_overdue,
        rounds=rounds,
        still_due=sum(still_due.values()),
        stopped=stopped,
        **totals,
    )
