"""`ImapClient`: seed 000's SessionManagedEmailClient, on the pool.

Callers call ``get_email_count``-style methods; the pool finds or opens the
session's IMAP connection, retries, reconnects, reports to the breaker and
falls back, as configured. This module does not import aioimaplib: the
connections it receives come from `sessionstore.upstream.imap.ImapConnector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._connector import HealthReport, Operation, Served

if TYPE_CHECKING:
    from ._pool import UpstreamPool


class ImapClient:
    """The mail operations of one session's IMAP upstream, each run with retry.

    Args:
        pool: the process's `UpstreamPool` (with an `ImapConnector`).
        session_id: the session whose upstream it is.
        upstream: the upstream's name in the session (see `UpstreamPool.register`).
        fallbacks: upstream names tried in order when this one is unavailable.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pool: UpstreamPool,
        session_id: str,
        upstream: str = "mail",
        *,
        fallbacks: Sequence[str] = (),
    ) -> None:
        self.pool = pool
        self.session_id = session_id
        self.upstream = upstream
        self.fallbacks = tuple(fallbacks)

    async def run(self, op: Operation[Any], *, label: str | None = None) -> Served[Any]:
        """Any operation ``async def op(conn: ImapConnection)``, with retry and fallback."""
        return await self.pool.run(
            self.session_id, self.upstream, op, fallbacks=self.fallbacks, label=label
        )

    async def get_email_count(self, mailbox: str = "INBOX") -> int:
        """Messages in `mailbox`."""
        served = await self.run(lambda conn: conn.get_email_count(mailbox), label="get_email_count")
        return int(served.value)

    async def list_mailboxes(self) -> list[str]:
        """The names of every mailbox."""
        served = await self.run(lambda conn: conn.list_mailboxes(), label="list_mailboxes")
        return list(served.value)

    async def search(self, *criteria: str, mailbox: str = "INBOX") -> list[str]:
        """Sequence numbers of the messages in `mailbox` matching `criteria` (ALL)."""
        served = await self.run(
            lambda conn: conn.search(*criteria, mailbox=mailbox), label="search"
        )
        return list(served.value)

    async def health_check(self) -> HealthReport:
        """NOOP with its response time; see `UpstreamPool.health`."""
        return await self.pool.health(self.session_id, self.upstream)

    async def close(self) -> None:
        """Close this process's connection (the record turns ``closed``)."""
        await self.pool.release(self.session_id, self.upstream)
