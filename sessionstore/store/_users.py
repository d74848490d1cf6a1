"""The user index: which sessions a user has, as a hint.

One sorted set per user, scored by each session's own absolute deadline and
pruned on every call. It lives in another Redis Cluster slot than the
sessions, so it cannot be in their scripts: it is updated in the same
pipeline (create) or right after (rotate, resume, delete, expire), read back
against the session records (`list_sessions`), and rebuilt by the repair job
when it drifts. It is never the source of truth.
"""

from __future__ import annotations

from .._scripts import Batch, call
from ..exceptions import InvalidInput
from ._context import StoreContext
from ._lua import script
from ._models import Session, SessionStatus
from ._read import READ_REPLIES, decode_read, queue_read

#: Index reads `list_sessions` makes at most before it answers with what it has
#: (each drops the ended ids it met, so the next one reads further).
_MAX_LIST_PASSES = 8


def queue_add(
    store: StoreContext, batch: Batch, user_id: str, session_id: str, lifetime_ms: int
) -> None:
    """Queue the index entry for a new session on `batch` (no extra round trip).

    `lifetime_ms` is the session's own absolute lifetime, so the entry lapses
    with the session and not before.
    """
    batch.script(
        script("user_index"), [store.keys.user_index(user_id)], ["add", session_id, lifetime_ms]
    )


async def move(
    store: StoreContext, user_id: str, old_id: str, new_id: str, deadline_ms: int
) -> None:
    """Replace `old_id` by `new_id` at the new session's absolute deadline (rotate, resume).

    The new id is added even when the old entry has gone meanwhile (a reader
    pruned it between the session's script and this call).
    """
    index = store.keys.user_index(user_id)
    await call(store.redis, script("user_index"), [index], ["move", old_id, new_id, deadline_ms])


async def remove(store: StoreContext, user_id: str, session_id: str) -> None:
    """Drop an ended session's entry (delete, expire)."""
    index = store.keys.user_index(user_id)
    await call(store.redis, script("user_index"), [index], ["remove", session_id])


async def list_sessions(store: StoreContext, user_id: str, *, limit: int) -> list[Session]:
    """Up to `limit` of the user's active sessions, oldest deadline first.

    Index ids are read back against their records in one pipelined round
    trip; ids of ended sessions are removed from the index as they are found,
    and the next page is read until `limit` live sessions are found or the
    index is exhausted.

    Raises:
        InvalidInput: `limit` is not a non-negative integer.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidInput("limit must be a non-negative integer")
    index = store.keys.user_index(user_id)
    sessions: list[Session] = []
    for _ in range(_MAX_LIST_PASSES):
        wanted = limit - len(sessions)
        if wanted <= 0:
            break
        # Live entries found so far stay in the index, ahead of the next page.
        reply = await call(
            store.redis, script("user_index"), [index], ["list", len(sessions), wanted]
        )
        ids = [str(i) for i in reply[1:]]
        live, stale = await _read_back(store, ids)
        sessions += live
        if stale:
            await call(store.redis, script("user_index"), [index], ["remove", *stale])
        if len(ids) < wanted or not stale:
            break  # the index is exhausted, or this page was all live
    return sessions


async def _read_back(store: StoreContext, ids: list[str]) -> tuple[list[Session], list[str]]:
    batch = Batch(store.redis)
    for session_id in ids:
        queue_read(batch, store.keys.session(session_id))
    replies = await batch.execute()
    live, stale = [], []
    for position, session_id in enumerate(ids):
        first = position * READ_REPLIES
        session = decode_read(session_id, replies[first : first + READ_REPLIES])
        if isinstance(session, Session) and session.status is SessionStatus.ACTIVE:
            live.append(session)
        else:
            stale.append(session_id)
    return live, stale
