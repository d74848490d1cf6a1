"""Listing sessions by status, for operators, without SCAN.

* ``active`` and ``expired`` sessions that still have a record are read from
  the shards' expiry indexes (one ``index_entries`` script per shard: the earliest
  entries of the time buckets on both sides of now), whatever the number of
  sessions. An active session's entry comes
  due before its deadline when the session slid since the entry was written
  (slides leave the index alone; the next sweep pass moves it), so ``active``
  also reads the due head and keeps the records that are active, and
  ``expired`` keeps the overdue records among the first `limit` due entries
  of each shard (active ones among them are left out).
* Ended ids (``expired`` after the sweep, ``closed``, ``rotated``) have only a
  tombstone, and no index points at tombstones. They are found through the
  shards' event streams (``expired``, ``deleted``, ``rotated`` events), read
  newest first and bounded by `scan_events` per shard; ids whose tombstone has
  lapsed are skipped. This is a bounded look at recent history, not a census.
"""

from __future__ import annotations

from collections.abc import Callable

from .._scripts import Batch
from ._context import HasStoreContext, StoreContext
from ._lua import script
from ._models import Session, SessionStatus, Tombstone, parse_pairs
from ._read import READ_REPLIES, decode_read, queue_read

#: The event that ends an id with each status.
_ENDING_EVENT = {
    SessionStatus.EXPIRED: "expired",
    SessionStatus.CLOSED: "deleted",
    SessionStatus.ROTATED: "rotated",
}

#: Called after each shard of an event scan with (shards done, shards in all).
Progress = Callable[[int, int], None]


async def list_by_status(
    store: HasStoreContext,
    status: SessionStatus,
    *,
    limit: int = 100,
    scan_events: int = 1000,
    progress: Progress | None = None,
) -> list[Session | Tombstone]:
    """Up to `limit` sessions or tombstones with `status` (see the module docstring).

    .. versionadded:: 0.1
    """
    context = store.context
    found: list[Session | Tombstone] = []
    if status in (SessionStatus.ACTIVE, SessionStatus.EXPIRED):
        found += await _from_indexes(context, overdue=status is SessionStatus.EXPIRED, limit=limit)
    if status is not SessionStatus.ACTIVE and len(found) < limit:
        seen = {item.id for item in found}
        ended = await _from_events(context, status, limit - len(found), scan_events, progress)
        found += [t for t in ended if t.id not in seen]
    return found[:limit]


async def _from_indexes(
    store: StoreContext, *, overdue: bool, limit: int
) -> list[Session | Tombstone]:
    entries = Batch(store.redis)
    for shard in range(store.keys.shards):
        entries.script(script("index_entries"), [store.keys.expiry(shard)], [limit])
    # Future entries first (their order is their deadline's), then the due head: active
    # sessions whose entry a slide left behind, read to tell them from expired ones.
    live: list[tuple[float, str]] = []
    due: list[tuple[float, str]] = []
    for _now, ahead, behind in await entries.execute():
        if not overdue:
            live += [(float(ahead[i + 1]), str(ahead[i])) for i in range(0, len(ahead), 2)]
        due += [(float(behind[i + 1]), str(behind[i])) for i in range(0, len(behind), 2)]
    ids = [session_id for _, session_id in sorted(live)[:limit] + sorted(due)[:limit]]
    wanted = SessionStatus.EXPIRED if overdue else SessionStatus.ACTIVE
    kept = [s for s in await _read(store, ids) if s.status is wanted]
    if overdue:
        return kept
    active = sorted((s for s in kept if isinstance(s, Session)), key=lambda s: s.expires_at)
    return list(active[:limit])


async def _from_events(
    store: StoreContext,
    status: SessionStatus,
    limit: int,
    scan_events: int,
    progress: Progress | None,
) -> list[Tombstone]:
    kind = _ENDING_EVENT[status]
    ids: list[str] = []
    shards = store.keys.shards
    for shard in range(shards):
        batch = Batch(store.redis)
        batch.command("XREVRANGE", store.keys.events(shard), "+", "-", "COUNT", scan_events)
        for _entry_id, fields in (await batch.execute())[0]:
            # redis-py parses stream entries into dicts; a raw reply is a flat list.
            event = fields if isinstance(fields, dict) else parse_pairs(list(fields))
            if event.get("kind") == kind and event.get("session_id") not in ids:
                ids.append(event["session_id"])
        if progress is not None:
            progress(shard + 1, shards)
    tombs = [t for t in await _read(store, ids) if isinstance(t, Tombstone) and t.status is status]
    return tombs[:limit]


async def _read(store: StoreContext, ids: list[str]) -> list[Session | Tombstone]:
    """Read sessions or tombstones in one round trip; ids with neither are skipped."""
    if not ids:
        return []
    batch = Batch(store.redis)
    for session_id in ids:
        queue_read(batch, store.keys.session(session_id))
    replies = await batch.execute()
    out: list[Session | Tombstone] = []
    for position, session_id in enumerate(ids):
        first = position * READ_REPLIES
        found = decode_read(session_id, replies[first : first + READ_REPLIES])
        if found is not None:
            out.append(found)
    return out
