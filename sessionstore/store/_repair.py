"""Repair: put the indexes back in step with the session records.

What can drift, and what cannot:

- The expiry index (per shard) is written in the same script as the record,
  so it drifts only when something outside the scripts touches Redis: a record
  evicted under ``maxmemory`` or deleted by hand leaves an entry that counts as
  live; an entry removed by hand leaves a record no sweep will reach. The
  store's counts come from this index (its buckets' counts), so repairing it repairs
  them. The single sorted set development builds kept per shard is deleted once the
  records pass has indexed every live record in the buckets (docs/keys.md).
- The user index lives in other slots and is written after the session's own
  script (create, rotate, resume, end, the sweep): a crash or a failed call
  between the two leaves an id missing from it, or a stale one in it; so does
  a record Redis evicted. Its hashes have no TTL: this job is what drops the
  ids of users who never come back whose sessions ended without their entry.
- The stats hash holds lifetime counters bumped inside each transition's
  script; they cannot disagree with the transitions and cannot be recounted
  from records (ended sessions leave only tombstones), so repair leaves them.

Repair walks the expiry index (ZSCAN of its buckets, each bucket read whole) and
the records (SCAN) of each shard, then every hash of the user index (HSCAN):
O(all sessions), which is why only the repair job does it. Every fix is decided
atomically by a script on the current state, so repair may run beside live
traffic and beside other repairs. A run stops at its time budget and returns a
cursor to continue from.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .._ids import check_name, session_shard
from .._keys import USER_INDEX_HASHES
from .._redis import backend_errors
from .._scripts import Arg, Batch, call
from .._time import to_ms
from ..exceptions import InvalidInput, InvalidSessionId
from ._context import HasStoreContext, StoreContext
from ._lua import script
from ._users import OWN_SET


class RepairReport(BaseModel):
    """What a repair run looked at and fixed.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    records_scanned: int = 0
    index_entries_scanned: int = 0
    #: Users' entries read from the user index.
    user_indexes_scanned: int = 0
    #: Live records that had no expiry-index entry (never swept, not counted).
    expiry_added: int = 0
    #: Expiry-index entries later than the record's deadline (an earlier one is where a
    #: slide leaves it: the sweep moves it when it comes due, see the prelude's slide).
    expiry_moved: int = 0
    #: Expiry-index entries of ids that had already ended.
    expiry_removed: int = 0
    #: Expiry-index entries whose record was gone: ended as expired ('lost').
    lost_expired: int = 0
    #: Active sessions missing from their user's index.
    user_index_added: int = 0
    #: User-index entries of sessions that no longer exist.
    user_index_removed: int = 0
    #: Where to continue (pass it back as `cursor`); None when the run finished.
    next_cursor: str | None = None

    @property
    def fixed(self) -> int:
        """Everything this run changed."""
        return (
            self.expiry_added
            + self.expiry_moved
            + self.expiry_removed
            + self.lost_expired
            + self.user_index_added
            + self.user_index_removed
        )


class _Run:
    """Counters and the time budget of one repair run."""

    def __init__(self, time_budget: timedelta | None, clock: Callable[[], float]) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.clock = clock
        self.deadline = None if time_budget is None else clock() + time_budget.total_seconds()

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline


async def repair_store(
    store: HasStoreContext,
    *,
    cursor: str | None = None,
    batch: int = 500,
    time_budget: timedelta | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RepairReport:
    """Repair the expiry index of every shard, then every user index.

    Args:
        store: the store to repair.
        cursor: a `RepairReport.next_cursor` to continue from (None: start).
        batch: keys read per SCAN page and fixed per script.
        time_budget: stop after about this long and return `next_cursor`.
        clock: monotonic seconds, for the budget (tests inject one).

    Raises:
        InvalidInput: a malformed cursor or batch.
        BackendUnavailable: Redis did not answer; what was fixed stays fixed.

    .. versionadded:: 0.1
    """
    if batch < 1:
        raise InvalidInput("batch must be positive")
    context = store.context
    stage, inner = _parse_cursor(cursor, context.keys.shards)
    run = _Run(time_budget, clock)
    next_cursor: str | None = None
    while stage <= context.keys.shards:
        if stage < context.keys.shards:
            left = await _repair_shard(context, stage, inner, batch, run)
        else:
            left = await _repair_user_indexes(context, inner, batch, run)
        if left is not None:
            next_cursor = f"{stage}/{left}"
            break
        stage, inner = stage + 1, ""
        if stage <= context.keys.shards and run.out_of_time():
            next_cursor = f"{stage}/"
            break
    return RepairReport(next_cursor=next_cursor, **run.counts)


def _parse_cursor(cursor: str | None, shards: int) -> tuple[int, str]:
    if not cursor:
        return 0, ""
    stage, sep, inner = cursor.partition("/")
    if not sep or not stage.isdigit() or int(stage) > shards:
        raise InvalidInput("not a repair cursor")
    return int(stage), inner


async def _scan_page(
    store: StoreContext, cursor: int, match: str, count: int, node: ClusterNode | None
) -> tuple[int, list[str]]:
    redis = store.redis
    with backend_errors("SCAN"):
        if isinstance(redis, RedisCluster):
            cursors, keys = await redis.scan(cursor, match=match, count=count, target_nodes=node)
            return int(next(iter(cursors.values()))), list(keys)
        next_cursor, keys = await redis.scan(cursor, match=match, count=count)
        return int(next_cursor), list(keys)


async def _shard_node(store: StoreContext, shard: int) -> ClusterNode | None:
    if not isinstance(store.redis, RedisCluster):
        return None
    await store.redis.initialize()
    node: ClusterNode | None = store.redis.get_node_from_key(store.keys.expiry(shard))
    return node


async def _repair_shard(
    store: StoreContext, shard: int, inner: str, batch: int, run: _Run
) -> str | None:
    """The index's buckets first (ZSCAN of its root, then each bucket), then the records
    (SCAN); returns the inner cursor if out of time. The index goes first so that an
    entry in a place its record does not say is moved (or dropped) before the records
    pass would add the record a second one."""
    phase, _, position = (inner or "index:0").partition(":")
    if phase not in ("records", "index") or not position.isdigit():
        raise InvalidInput("not a repair cursor")
    cursor = int(position)
    prefix = store.keys.session_prefixes(shard)["session"]
    node = await _shard_node(store, shard)
    while True:
        if phase == "index":
            cursor, pairs = await _index_page(store, shard, cursor, batch)
            run.counts["index_entries_scanned"] += len(pairs) // 2
            for start in range(0, len(pairs), 2 * batch):
                await _fix_sessions(store, shard, "index", pairs[start : start + 2 * batch], run)
        else:
            cursor, keys = await _scan_page(
                store, cursor, store.keys.session_pattern(shard), batch, node
            )
            ids: list[Arg] = [key[len(prefix) :] for key in keys]
            run.counts["records_scanned"] += len(ids)
            if ids:
                await _fix_sessions(store, shard, "records", ids, run)
        if cursor == 0:
            if phase == "records":
                await _drop_legacy_index(store, shard)
                return None
            phase = "records"
        if run.out_of_time():
            return f"{phase}:{cursor}"


async def _index_page(
    store: StoreContext, shard: int, cursor: int, batch: int
) -> tuple[int, list[Arg]]:
    """One ZSCAN page of the buckets of `shard`'s expiry index and, read in one round
    trip, their entries: (next cursor, [session id, bucket name, ...])."""
    with backend_errors("ZSCAN"):
        cursor, buckets = await store.redis.zscan(
            store.keys.expiry(shard), cursor, count=max(1, batch // 128)
        )
    names = [str(name) for name, _ in buckets]
    if not names:
        return cursor, []
    calls = Batch(store.redis)
    for name in names:
        calls.command("ZRANGE", store.keys.expiry_bucket(shard, name), 0, -1)
    pairs: list[Arg] = []
    for name, members in zip(names, await calls.execute(), strict=True):
        for member in members:
            pairs += [str(member), name]
    return cursor, pairs


async def _drop_legacy_index(store: StoreContext, shard: int) -> None:
    """Delete the single sorted set development builds kept as the shard's expiry
    index: the records pass just indexed every live record in the buckets."""
    with backend_errors("UNLINK"):
        await store.redis.unlink(store.keys.legacy_expiry(shard))


async def _fix_sessions(
    store: StoreContext, shard: int, mode: str, items: list[Arg], run: _Run
) -> None:
    cfg = store.settings
    args: list[Arg] = [
        to_ms(cfg.expired_retention),
        cfg.events_maxlen,
        *store.keys.session_prefix_args(shard),
        mode,
        *items,
    ]
    keys = [store.keys.expiry(shard), store.keys.stats(shard), store.keys.events(shard)]
    reply = await call(store.redis, script("repair_sessions"), keys, args)
    for name, value in zip(
        ("expiry_added", "expiry_moved", "expiry_removed", "lost_expired"), reply, strict=False
    ):
        run.counts[name] += int(value)
    by_user: dict[str, list[Arg]] = defaultdict(list)
    for i in range(4, len(reply), 3):  # user id, session id, absolute deadline (unused)
        by_user[str(reply[i])].append(str(reply[i + 1]))
    if by_user:
        calls = Batch(store.redis)
        for user, added in by_user.items():
            keys = store.keys.user_index_keys(user)
            calls.script(script("user_index"), keys, ["add", user, *added])
        run.counts["user_index_added"] += sum(int(n) for n in await calls.execute())


async def _repair_user_indexes(
    store: StoreContext, inner: str, batch: int, run: _Run
) -> str | None:
    """Drop user-index ids of sessions without a record, hash by hash (HSCAN); returns
    a cursor if out of time."""
    at, _, position = (inner or "0:0").partition(":")
    if not at.isdigit() or not position.isdigit():
        raise InvalidInput("not a repair cursor")
    k, cursor = int(at), int(position)
    while k < USER_INDEX_HASHES:
        key = store.keys.user_index_at(k)
        with backend_errors("HSCAN"):
            cursor, entries = await store.redis.hscan(key, cursor, count=batch)
        run.counts["user_indexes_scanned"] += len(entries)
        if entries:
            await _prune_user_entries(store, key, entries, run)
        if cursor == 0:
            k += 1
        if k < USER_INDEX_HASHES and run.out_of_time():
            return f"{k}:{cursor}"
    return None


async def _prune_user_entries(
    store: StoreContext, key: str, entries: dict[str, str], run: _Run
) -> None:
    """Drop, from one hash's `entries` (user id: its field), the ids whose record is
    gone, and fields that name no user id (written by hand)."""
    ids_of, junk = await _entry_ids(store, entries)
    stale = await _stale_ids(store, ids_of)
    if not stale and not junk:
        return
    calls = Batch(store.redis)
    for user, ids in stale.items():
        calls.script(script("user_index"), store.keys.user_index_keys(user), ["remove", user, *ids])
    if junk:
        calls.command("HDEL", key, *junk)
    run.counts["user_index_removed"] += sum(int(n) for n in await calls.execute())


async def _entry_ids(
    store: StoreContext, entries: dict[str, str]
) -> tuple[dict[str, list[str]], list[str]]:
    """The ids of each user of `entries` (those in a user's own sorted set read in one
    round trip), and the fields that name no user id."""
    ids_of: dict[str, list[str]] = {}
    junk: list[str] = []
    owned: list[str] = []
    for user, value in entries.items():
        try:
            check_name(user, "user_id")
        except InvalidInput:
            junk.append(user)
        else:
            if value == OWN_SET:
                owned.append(user)
            else:
                ids_of[user] = str(value).split()
    if owned:
        calls = Batch(store.redis)
        for user in owned:
            calls.command("ZRANGE", store.keys.user_sessions(user), 0, -1)
        for user, ids in zip(owned, await calls.execute(), strict=True):
            ids_of[user] = [str(i) for i in ids]
    return ids_of, junk


async def _stale_ids(store: StoreContext, ids_of: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per user, the ids that are no session id or whose record is gone (one EXISTS
    each, pipelined)."""
    stale: dict[str, list[str]] = defaultdict(list)
    valid: list[tuple[str, str]] = []
    for user, ids in ids_of.items():
        for member in ids:
            try:
                session_shard(member, store.keys.shards)
            except InvalidSessionId:
                stale[user].append(member)  # not an id this store issues: it can only be junk
            else:
                valid.append((user, member))
    if valid:
        calls = Batch(store.redis)
        for _, member in valid:
            calls.command("EXISTS", store.keys.session(member).record)
        exists: list[Any] = await calls.execute()
        for (user, member), found in zip(valid, exists, strict=True):
            if not int(found):
                stale[user].append(member)
    return stale
