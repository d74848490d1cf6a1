"""The user index: which sessions a user has, as a hint.

A user's entry is one field of a hash shared with the other users whose ids
hash to it (`KeySpace.user_index`: a fixed number of hashes, so small ones
stay compact and no operator sizes anything); its value is the user's session
ids, oldest first, or, for a user with more than fit in 64 bytes, a mark
that they are in a sorted set of the user's own in the same slot
(`KeySpace.user_sessions`), so no call copies a long value. It lives in
another Redis Cluster slot than the sessions, so it cannot be in their
scripts: it is updated in the same pipeline (create)
or right after (rotate, resume, delete, expire, the sweep), read back against
the session records (`list_sessions`), and rebuilt by the repair job when it
drifts. It is never the source of truth, and it has no TTL: an id leaves with
its session, and the repair job drops the ids whose records are gone (a crash
between a session's script and its index update, a record Redis evicted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .._scripts import Batch, call
from ..exceptions import InvalidInput, InvalidSessionId
from ._context import StoreContext
from ._lua import script
from ._models import Session, SessionStatus
from ._read import READ_REPLIES, decode_read, queue_read

#: Pages of ids `list_sessions` reads back at most before it answers with what it has
#: (each page is one round trip; the ended ids met are dropped all the same).
_MAX_LIST_PASSES = 8


def queue_add(store: StoreContext, batch: Batch, user_id: str, session_id: str) -> None:
    """Queue the index entry for a new session on `batch` (no extra round trip)."""
    keys = store.keys.user_index_keys(user_id)
    batch.script(script("user_index"), keys, ["add", user_id, session_id])


async def move(store: StoreContext, user_id: str, old_id: str, new_id: str) -> None:
    """Put `new_id` in `old_id`'s place (rotate, resume).

    The new id is added even when the old entry has gone meanwhile (a reader
    dropped it between the session's script and this call).
    """
    keys = store.keys.user_index_keys(user_id)
    await call(store.redis, script("user_index"), keys, ["move", user_id, old_id, new_id])


async def remove(store: StoreContext, user_id: str, session_id: str) -> None:
    """Drop an ended session's entry (delete, expire)."""
    keys = store.keys.user_index_keys(user_id)
    await call(store.redis, script("user_index"), keys, ["remove", user_id, session_id])


async def remove_ended(store: StoreContext, ended: Iterable[tuple[str, str]]) -> None:
    """Drop the entries of ended sessions, given as (user id, session id) pairs, in one
    pipelined round trip (one script per user)."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for user_id, session_id in ended:
        by_user[user_id].append(session_id)
    batch = Batch(store.redis)
    for user_id, ids in by_user.items():
        try:
            keys = store.keys.user_index_keys(user_id)
        except InvalidInput:
            continue  # a record's user id written by hand: no entry can name it
        batch.script(script("user_index"), keys, ["remove", user_id, *ids])
    await batch.execute()  # sends nothing when there is nothing to drop


#: What a user's field holds when its ids are in its own sorted set (user_index.lua).
OWN_SET = "*"


async def indexed_ids(store: StoreContext, user_id: str, *, first: int = -1) -> list[str]:
    """The session ids in `user_id`'s entry, oldest first, as stored (ended ones too):
    all of them, or at least the `first` ones when given. One round trip: the field and
    the user's own sorted set are read together (one slot)."""
    hash_key, own = store.keys.user_index_keys(user_id)
    batch = Batch(store.redis)
    batch.command("HGET", hash_key, user_id)
    batch.command("ZRANGE", own, 0, first - 1 if first > 0 else -1)
    value, in_own = await batch.execute()
    if value == OWN_SET:
        return [str(i) for i in in_own]
    return str(value).split() if value else []


async def list_sessions(store: StoreContext, user_id: str, *, limit: int) -> list[Session]:
    """Up to `limit` of the user's active sessions, oldest deadline first.

    The entry is read once; its ids are read back against their records, a
    page of the ids still wanted at a time (one pipelined round trip each),
    until `limit` live sessions are found or the entry is exhausted. Ids of
    ended sessions are then dropped from the index in one more call. Ids are
    read in the entry's order (creation; a rotated id keeps its place, a
    resumed one goes last), so with more live sessions than `limit` the ones
    returned are the first `limit` of that order: the oldest deadlines
    whenever sessions share their lifetime.

    Raises:
        InvalidInput: `limit` is not a non-negative integer.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidInput("limit must be a non-negative integer")
    keys = store.keys.user_index_keys(user_id)
    if limit == 0:
        return []
    ids = await indexed_ids(store, user_id, first=limit * _MAX_LIST_PASSES)
    sessions: list[Session] = []
    stale: list[str] = []
    read = passes = 0
    while read < len(ids) and len(sessions) < limit and passes < _MAX_LIST_PASSES:
        passes += 1
        page = ids[read : read + limit - len(sessions)]
        read += len(page)
        live, ended = await _read_back(store, page)
        sessions += live
        stale += ended
    if stale:
        await call(store.redis, script("user_index"), keys, ["remove", user_id, *stale])
    return sorted(sessions, key=lambda session: session.absolute_deadline)


async def _read_back(store: StoreContext, ids: list[str]) -> tuple[list[Session], list[str]]:
    live: list[Session] = []
    stale: list[str] = []
    readable = []
    for session_id in ids:
        try:
            store.keys.session(session_id)
        except InvalidSessionId:
            stale.append(session_id)  # not an id this store issues (written by hand)
        else:
            readable.append(session_id)
    batch = Batch(store.redis)
    for session_id in readable:
        queue_read(batch, store.keys.session(session_id))
    replies = await batch.execute() if readable else []
    for position, session_id in enumerate(readable):
        first = position * READ_REPLIES
        session = decode_read(session_id, replies[first : first + READ_REPLIES])
        if isinstance(session, Session) and session.status is SessionStatus.ACTIVE:
            live.append(session)
        else:
            stale.append(session_id)
    return live, stale
