"""The expiry sweep: due sessions expired shard by shard, in atomic batches.

One ``sweep`` script (``lua/sweep.lua``) expires up to a batch of one shard's
due head atomically: each expired session gets its tombstone, loses its
leases, lock and upstream records, is counted and emits an ``expired`` event.
The user index is in other slots: the script names the users of the sessions
it expired, and their entries are dropped right after (`ended_users`), one
pipelined round trip per round that expired any (a crash in between leaves
ids the next reader or the repair job drops).
`sweep_shard` runs it once; `sweep_store` sweeps the whole store.

One round of `sweep_store` sends one ``sweep`` script per shard that still
has due sessions, pipelined (`Batch`: one round trip per node), so a run's
cost grows with the number of due sessions, never with the live ones, and
any number of workers may sweep at once without expiring a session twice. A run ends when nothing
is due, or at its budget (entries handled, time), leaving the rest for the
next run: after downtime, successive runs catch up oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .._scripts import Arg, Batch, call
from .._time import ms_to_datetime, to_ms
from ..exceptions import InvalidInput
from . import _users
from ._context import HasStoreContext, StoreContext
from ._lua import script
from ._models import SweepResult


def sweep_call(
    store: StoreContext, shard: int, *, batch: int, min_overdue_ms: int = 0
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


def ended_users(reply: list[Any]) -> list[tuple[str, str]]:
    """(user id, session id) of the sessions a ``sweep`` reply expired that had a user."""
    return [(str(reply[i]), str(reply[i + 1])) for i in range(7, len(reply) - 1, 2)]


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
    store: StoreContext, shard: int, *, batch: int = 500, min_overdue: timedelta = timedelta(0)
) -> SweepResult:
    """Expire up to `batch` due sessions of `shard` in one atomic script.

    Each expired session gets its tombstone, loses its leases, lock and
    upstream records, is counted and emits an ``expired`` event, all inside the
    same script. With `min_overdue`, only sessions due by at least that long
    are taken (the aggressive start-up pass). Whole-store sweeps in rounds
    are `sweep_store`.

    .. versionadded:: 0.1
    """
    overdue_ms = int(min_overdue.total_seconds() * 1000)
    keys, args = sweep_call(store, shard, batch=batch, min_overdue_ms=overdue_ms)
    reply = await call(store.redis, script("sweep"), keys, args)
    await _users.remove_ended(store, ended_users(reply))
    return sweep_result(shard, reply)


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


class _Run:
    """The state of one sweep run: totals, per-shard due counts, Redis times."""

    def __init__(self, store: StoreContext, batch: int, overdue_ms: int) -> None:
        self.store = store
        self.batch = batch
        self.overdue_ms = overdue_ms
        self.totals = {"expired": 0, "lost": 0, "rescheduled": 0, "removed": 0}
        self.still_due: dict[int, int] = {}
        self.first_ms = self.last_ms = 0
        self.rounds = 0

    @property
    def handled(self) -> int:
        return self.totals["expired"] + self.totals["rescheduled"] + self.totals["removed"]

    async def round(self, pending: list[int], budget: int) -> int:
        """One pipelined script per pending shard, within `budget` entries; returns handled."""
        calls = Batch(self.store.redis)
        allotted = []
        for shard in pending:  # split the budget so a run never handles more than it
            size = min(self.batch, budget)
            if size == 0:
                break
            allotted.append(shard)
            budget -= size
            calls.script(script("sweep"), *self._call(shard, size))
        handled_before = self.handled
        replies = await calls.execute()
        for shard, reply in zip(allotted, replies, strict=True):
            self._add(shard, reply)
        await _users.remove_ended(self.store, [e for r in replies for e in ended_users(r)])
        self.rounds += 1
        return self.handled - handled_before

    async def count(self, shards: list[int]) -> None:
        """Due counts of shards a budget-stopped run never reached (a zero-size batch
        of the same script only counts), so `still_due` is exact."""
        calls = Batch(self.store.redis)
        for shard in shards:
            calls.script(script("sweep"), *self._call(shard, 0))
        for shard, reply in zip(shards, await calls.execute(), strict=True):
            self._add(shard, reply)

    def _call(self, shard: int, size: int) -> tuple[list[str], list[Arg]]:
        return sweep_call(self.store, shard, batch=size, min_overdue_ms=self.overdue_ms)

    def _add(self, shard: int, reply: list[Any]) -> None:
        result = sweep_result(shard, reply)
        for name in self.totals:
            self.totals[name] += getattr(result, name)
        self.still_due[shard] = result.still_due
        self.first_ms = self.first_ms or int(reply[4])
        self.last_ms = max(self.last_ms, int(reply[4]))


async def sweep_store(
    store: HasStoreContext,
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
    context = store.context
    run = _Run(context, batch, int(min_overdue.total_seconds() * 1000))
    deadline = None if time_budget is None else clock() + time_budget.total_seconds()
    pending = list(range(context.keys.shards))
    stopped: StopReason = "done"
    while pending:
        if run.handled >= max_sessions:
            stopped = "max_sessions"
            break
        if deadline is not None and run.rounds and clock() >= deadline:
            stopped = "time_budget"
            break
        handled = await run.round(pending, max_sessions - run.handled)
        before = len(pending)
        pending = [shard for shard in pending if run.still_due.get(shard, 1) > 0]
        if handled == 0 and len(pending) == before:
            break  # no progress at all (cannot happen with batch >= 1): never spin
    unvisited = [shard for shard in range(context.keys.shards) if shard not in run.still_due]
    if unvisited:
        await run.count(unvisited)
    return SweepReport(
        started_at=ms_to_datetime(run.first_ms),
        finished_at=ms_to_datetime(run.last_ms),
        min_overdue=min_overdue,
        rounds=run.rounds,
        still_due=sum(run.still_due.values()),
        stopped=stopped,
        **run.totals,
    )
