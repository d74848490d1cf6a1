"""Locks on a session: leases with an owner token and a fencing number.

A lock is granted for `lock_ttl` and must be renewed by its owner. Each new
grant takes the next fence from the session record, so a holder whose lease
lapsed (a GC pause, a partition) carries a smaller fence than the newer holder,
and writes that pass ``fence=`` are refused with `StaleFence`.

A lock held across a rotate moves with the session (rotate renames its key):
the holder's renew or release finds the new id (`follow_rotation`, the owner
token is the proof) and goes on there. ``async with`` lets an error of the
body win over a lock lost meanwhile, as `TrackedLease` does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from datetime import timedelta
from types import TracebackType
from typing import Any

from .._ids import short_id
from .._scripts import Arg, call
from .._time import to_ms
from ..exceptions import InvalidInput, LockNotAcquired, LockNotOwned, SessionStoreError
from ._context import HasStoreContext
from ._lua import script
from ._replies import raise_refusal
from ._successors import follow_rotation

logger = logging.getLogger("sessionstore.locks")


class SessionLock:
    """A leased lock on one session.

    Use as ``async with SessionLock(store, session_id) as fence:`` or call
    `acquire`, `renew` and `release` directly.

    Args:
        store: the store the session lives in.
        session_id: the session to lock.
        ttl: lease length; defaults to the store's `lock_ttl`.
        owner: a token naming the holder; random by default.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        store: HasStoreContext,
        session_id: str,
        *,
        ttl: timedelta | None = None,
        owner: str | None = None,
    ) -> None:
        self.context = store.context
        self.keys = self.context.keys.session(session_id)
        self.session_id = session_id
        self.ttl = ttl or self.context.settings.lock_ttl
        if self.ttl <= timedelta(0):
            raise InvalidInput("lock ttl must be positive")
        self.owner = owner or secrets.token_hex(16)
        #: The fence of the current grant (None until acquired).
        self.fence: int | None = None

    @property
    def name(self) -> str:
        return f"session {self.session_id}"

    async def acquire(self, *, blocking: bool = True, timeout: timedelta | None = None) -> int:
        """Take the lock; returns its fence. One round trip per attempt.

        Args:
            blocking: wait for the lock; if False, fail at once when it is held.
            timeout: how long to wait (default: one lease period).

        Raises:
            LockNotAcquired: held by another owner (after `timeout` when blocking).
            SessionGone / SessionNotFound: the session cannot be used.
        """
        wait = (timeout or self.ttl).total_seconds() if blocking else 0.0
        deadline = asyncio.get_running_loop().time() + wait
        delay = 0.005
        while True:
            reply = await self._do("acquire")
            if reply[0] == "ok":
                self.fence = int(reply[1])
                return self.fence
            if reply[0] != "held":
                raise_refusal(self.session_id, reply)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise LockNotAcquired(self.name, "held by another owner")
            # Poll with capped exponential backoff and jitter (each poll is one round trip).
            await asyncio.sleep(min(remaining, random.uniform(0, delay)))
            delay = min(delay * 2, 0.2)

    async def renew(self) -> None:
        """Extend the lease by `ttl`.

        Raises:
            LockNotOwned: not held by this owner (never acquired, or lapsed).
        """
        if (await self._held("renew"))[0] != "ok":
            raise LockNotOwned(self.name, "not held by this owner")

    async def release(self) -> None:
        """Release the lock. One round trip.

        Raises:
            LockNotOwned: not held by this owner (never acquired, or lapsed).
        """
        reply = await self._held("release")
        self.fence = None
        if reply[0] != "ok":
            raise LockNotOwned(self.name, "not held by this owner")

    async def _held(self, mode: str) -> list[Any]:
        """Renew or release; if the lock is not on this id, follow a rotate once."""
        reply = await self._do(mode)
        if reply[0] == "not_owner":
            new_id = await follow_rotation(self.context, self.session_id, "lock", self.owner)
            if new_id is not None:
                self.session_id = new_id
                self.keys = self.context.keys.session(new_id)
                reply = await self._do(mode)
        return reply

    async def _do(self, mode: str) -> list[Any]:
        args: list[Arg] = [self.session_id, mode, self.owner, to_ms(self.ttl)]
        reply: list[Any] = await call(self.context.redis, script("lock"), self.keys.ordered(), args)
        return reply

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.release()
        except SessionStoreError:
            if exc is None:
                raise
            # The body's error is the one the caller must see; the lock lapses by itself.
            logger.warning(
                "could not release the lock of session %s after an error in its body",
                short_id(self.session_id),
                exc_info=True,
            )
