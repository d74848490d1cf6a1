"""The user index: which sessions a user has, as a hint.

One sorted set per user, scored by absolute deadline and pruned on every
call. It lives in another Redis Cluster slot than the sessions, so it cannot
be in their scripts: it is updated in the same pipeline (create) or right after
(resume, rotate), read back against the session records (`list_sessions`), and
rebuilt by the repair job when it drifts. It is never the source of truth.
"""

from __future__ import annotations

from .._scripts import Batch, call
from .._time import to_ms
from ._context import StoreContext
from ._lua import script
from ._models import Session, SessionStatus


def queue_add(store: StoreContext, batch: Batch, user_id: str, session_id: str) -> None:
    """Queue the index entry for a new session on `batch` (no extra round trip)."""
    lifetime = to_ms(store.settings.absolute_lifetime)
    batch.script(
        script("user_index"), [store.keys.user_index(user_id)], ["add", session_id, lifetime]
    )


async def add(store: StoreContext, user_id: str, session_id: str) -> None:
    """Index a session that was created by another script (resume)."""
    batch = Batch(store.redis)
    queue_add(store, batch, user_id, session_id)
    await batch.execute()


async def replace(store: StoreContext, user_id: str, old_id: str, new_id: str) -> None:
    """Point the user's entry for `old_id` at `new_id`, keeping its deadline (rotate)."""
    index = store.keys.user_index(user_id)
    await call(store.redis, script("user_index"), [index], ["replace", old_id, new_id])


async def list_sessions(store: StoreContext, user_id: str, *, limit: int) -> list[Session]:
    """The user's active sessions: index ids read back in one pipelined round trip;
    ids of ended sessions are removed from the index as they are found."""
    index = store.keys.user_index(user_id)
    reply = await call(store.redis, script("user_index"), [index], ["list", limit])
    ids = [str(i) for i in reply[1:]]
    batch = Batch(store.redis)
    for session_id in ids:
        batch.script(script("get"), store.keys.session(session_id).ordered(), [])
    sessions, stale = [], []
    for session_id, got in zip(ids, await batch.execute(), strict=True):
        session = Session.from_reply(got) if got[0] == "record" else None
        if session is not None and session.status is SessionStatus.ACTIVE:
            sessions.append(session)
        else:
            stale.append(session_id)
    if stale:
        await call(store.redis, script("user_index"), [index], ["remove", *stale])
    return sessions
