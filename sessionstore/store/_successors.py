"""Transitions that issue a new id for a session: resume and rotate.

Both run in the old session's shard, so the old and the new id share a hash
tag and each transition is one atomic script (``resume.lua``, ``rotate.lua``).
The user index is another slot and is updated right after.
"""

from __future__ import annotations

from .._ids import new_session_id
from .._scripts import Arg, call
from .._time import to_ms
from ..exceptions import SessionStoreError
from . import _users
from ._context import StoreContext
from ._lua import script
from ._models import Session
from ._replies import raise_refusal

#: How many successor hops `resume` follows before giving up (each is a round trip).
MAX_RESUME_HOPS = 8
#: New ids drawn before giving up on a collision (144 random bits: never in practice).
_ID_DRAWS = 3


async def resume(store: StoreContext, session_id: str) -> Session:
    """See `SessionStore.resume`."""
    cfg = store.settings
    current = session_id
    for _ in range(MAX_RESUME_HOPS):
        old = store.keys.session(current)
        new_id = new_session_id(old.shard)
        new = store.keys.session(new_id)
        args: list[Arg] = [
            current,
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
        if reply[0] == "superseded":  # resumed before: follow to the successor
            current = str(reply[1])
            continue
        if reply[0] == "resumed":
            session = Session.from_reply(reply)
            if session.user_id:
                await _users.add(store, session.user_id, new_id)
            return session
        raise_refusal(current, reply)
    raise SessionStoreError(f"session {session_id}: too many successors to follow")


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
                await _users.replace(store, str(reply[1]), session_id, new_id)
            return new_id
        if reply[0] != "exists":
            raise_refusal(session_id, reply)
    raise SessionStoreError("could not draw an unused session id")
