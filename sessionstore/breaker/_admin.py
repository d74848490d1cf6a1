"""Inspection and manual control of breakers, without a registry (CLI, server, scripts).

Manual actions take an actor and a reason, checked here before anything
reaches Redis; the script records them with Redis time in the breaker's
audit stream and announces the new state to every replica.
"""

from __future__ import annotations

import re
from datetime import datetime

from .._keys import KeySpace
from .._redis import RedisClient
from .._time import ms_to_datetime
from ..exceptions import BackendUnavailable, InvalidInput
from ..settings import BreakerSettings
from ._health import logger
from ._model import AuditEntry, BreakerEvent, BreakerSnapshot, BreakerStatus
from ._remote import BreakerScripts, ControlAction

#: Printable text: no control characters (newlines, escapes) in audit records.
_TEXT = re.compile(r"[^\x00-\x1f\x7f]*")
MAX_ACTOR = 128
MAX_REASON = 500


def check_actor(actor: object) -> str:
    """Check who is acting.

    Raises:
        InvalidInput: not 1-128 printable characters.
    """
    if not isinstance(actor, str) or not 0 < len(actor) <= MAX_ACTOR or not _TEXT.fullmatch(actor):
        raise InvalidInput(f"actor must be 1-{MAX_ACTOR} printable characters")
    return actor


def check_reason(reason: object, *, required: bool) -> str:
    """Check why an operator acts.

    Raises:
        InvalidInput: not printable, longer than 500 characters, or empty when required.
    """
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not _TEXT.fullmatch(reason):
        raise InvalidInput(f"reason must be at most {MAX_REASON} printable characters")
    if required and not reason.strip():
        raise InvalidInput("a reason is required")
    return reason


class BreakerAdmin:
    """Read and steer the fleet's breakers.

    Args:
        redis: the store's client; the caller closes it.
        settings: the breaker settings of the fleet (window and caps).
        key_prefix: the store's key prefix.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: BreakerSettings | None = None,
        *,
        key_prefix: str = "ss",
    ) -> None:
        self.scripts = BreakerScripts(redis, KeySpace(key_prefix, 1), settings or BreakerSettings())

    @classmethod
    def for_scripts(cls, scripts: BreakerScripts) -> BreakerAdmin:
        """An admin sharing `scripts` (a registry's)."""
        admin = cls.__new__(cls)
        admin.scripts = scripts
        return admin

    def _check(self, name: str) -> str:
        self.scripts.keys.breaker(name)  # raises InvalidInput for a bad name
        return name

    async def names(self) -> list[tuple[str, datetime]]:
        """Breakers used within the retention period, with their last use."""
        return [(name, ms_to_datetime(last)) for name, last in await self.scripts.names()]

    async def status(self, name: str) -> BreakerStatus:
        """State, window totals and live probes of one breaker (one round trip).

        ``status.known`` is False when Redis holds nothing about it.

        Raises:
            InvalidInput: a malformed name; nothing reached Redis.
        """
        return await self.scripts.read(self._check(name))

    async def statuses(self) -> list[BreakerStatus]:
        """The status of every known breaker (one batch)."""
        names = [name for name, _ in await self.scripts.names()]
        by_name = await self.scripts.read_many(names)
        return [by_name[name] for name in names]

    async def history(self, name: str, count: int = 20) -> list[BreakerEvent]:
        """The newest `count` events of the breaker (transitions, reclaimed probes).

        Raises:
            InvalidInput: a bad name or a negative count.
        """
        self._check(name)
        return await self.scripts.events(name, count) if _count(count) else []

    async def audit(self, name: str, count: int = 20) -> list[AuditEntry]:
        """The newest `count` manual actions on the breaker.

        Raises:
            InvalidInput: a bad name or a negative count.
        """
        self._check(name)
        return await self.scripts.audit(name, count) if _count(count) else []

    async def _control(
        self, name: str, action: ControlAction, actor: str, reason: str, *, required: bool
    ) -> BreakerSnapshot:
        self._check(name)
        check_actor(actor)
        check_reason(reason, required=required)
        snapshot = await self.scripts.control(name, action, actor, reason)
        try:
            # So `list` shows a breaker isolated before anyone used it. A hint only.
            await self.scripts.touch_index([name])
        except BackendUnavailable:
            logger.warning("breaker %s changed, but the index could not be updated", name)
        return snapshot

    async def force_open(self, name: str, *, actor: str, reason: str) -> BreakerSnapshot:
        """Isolate the upstream: every replica refuses calls until `reset` or `force_closed`.

        Raises:
            InvalidInput: bad name, actor or reason (a reason is required).
        """
        return await self._control(name, "force_open", actor, reason, required=True)

    async def force_closed(self, name: str, *, actor: str, reason: str) -> BreakerSnapshot:
        """Hold the breaker closed: calls pass and nothing is recorded until `reset`.

        Raises:
            InvalidInput: bad name, actor or reason (a reason is required).
        """
        return await self._control(name, "force_closed", actor, reason, required=True)

    async def reset(self, name: str, *, actor: str, reason: str = "") -> BreakerSnapshot:
        """Back to automatic: closed, with an empty window.

        Raises:
            InvalidInput: bad name, actor or reason.
        """
        return await self._control(name, "reset", actor, reason, required=False)


def _count(count: int) -> int:
    # XREVRANGE refuses COUNT 0: none is asked for without a round trip.
    if count < 0:
        raise InvalidInput("count must not be negative")
    return count
