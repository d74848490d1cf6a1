"""Transitions that issue a new id for a session: resume and rotate.

Both run in the old session's shard, so the old and the new id share a hash
tag and each transition is one atomic script (``resume.lua``, ``rotate.lua``).
The user index is another slot and is updated right after.

Who learns the new id: rotate hands it to its caller only; the old id then
answers ``rotated`` with no successor, except to the holder of a lease or lock
that moved with the session (`follow_rotation`: the lease id or lock owner is
the proof). Resume of an expired id issues a successor once, to whoever
resumes it first; a second resume of that id is refused as expired.
"""

from __future__ import annotations

from typing import Literal

from .._ids import new_session_id
from .._scripts import Arg, call
from .._time import to_ms
from ..exceptions import SessionExpired, SessionStoreError
from . import _users
from ._context import StoreContext
from ._lua import script
from ._models import Session
from ._replies import raise_refusal

#: New ids drawn before giving up on a collision (144 random bits: never in practice).
_ID_DRAWS = 3


async def resume(store: StoreContext, session_id: str) -> Session:
    """See `SessionStore.resume`."""
    cfg = store.settings
    old = store.keys.session(session_id)
    for _ in range(_ID_DRAWS):
        new_id = new_session_id(old.shard)
        new = store.keys.session(new_id)
        args: list[Arg] = [
            session_id,
            new_id,
            to_ms(cfg.sweep_grace),
            to_ms(cfg.idle_timeout),
            to_ms(cfg.absolute_lifetime),
            to_ms(cfg.expired_retention),
            cfg.events_maxlen,
        ]
        reply = await call(store.redis, script("resume"), old.ordered() + new.ordered(), args)
        if reply[0] == "active":
            return Session.from_reply(reply)
        if reply[0] == "superseded":
            # Resumed before: the successor went to whoever resumed first.
            raise SessionExpired(session_id)
        if reply[0] == "resumed":
            session = Session.from_reply(reply)
            if session.user_id:
                await _users.move(store, session.user_id, session_id, new_id)
            return session
        raise_refusal(session_id, reply)
    raise SessionStoreError("could not draw an unused session id")


async def rotate(store: StoreContext, session_id: str) -> str:
    """See `SessionStore.rotate`; returns the new id (the store reads the session back)."""
    old = store.keys.session(session_id)
    for _ in range(_ID_DRAWS):
        new_id = new_session_id(old.shard)
        new = store.keys.session(new_id)
        args: list[Arg] = [
            session_id,
            new_id,
            to_ms(store.settings.expired_retention),
            store.settings.events_maxlen,
        ]
        reply = await call(store.redis, script("rotate"), old.ordered() + new.ordered(), args)
        if reply[0] == "ok":
            if reply[1]:
                await _users.move(store, str(reply[1]), session_id, new_id)
            return new_id
        if reply[0] != "exists":
            raise_refusal(session_id, reply)
    raise SessionStoreError("could not draw an unused session id")


#: What a holder follows across a rotate: its request lease, connection lease or lock.
Held = Literal["requests", "conns", "lock"]


async def follow_rotation(
    store: StoreContext, session_id: str, what: Held, token: str
) -> str | None:
    """The id `session_id` was rotated to, if the lease or lock `token` moved there.

    One round trip. Only the holder of that lease id or lock owner learns the
    new id; None when the id was not rotated or the token is not on its successor.
    """
    keys = store.keys.session(session_id)
    args: list[Arg] = [what, token, *store.keys.session_prefix_args(keys.shard)]
    reply = await call(store.redis, script("follow"), keys.ordered(), args)
    return str(reply[1]) if reply[0] == "ok" else None
