"""`ImapClient`: a session-managed email client, on the pool.

Callers call ``get_email_count``-style methods; the pool finds or opens the
session's IMAP connection, retries, reconnects, reports to the breaker and
falls back, as configured. This module does not import aioimaplib: the
connections it receives come from `sessionstore.upstream.imap.ImapConnector`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import InvalidInput
from ._connector import HealthReport, Operation, Served

if TYPE_CHECKING:
    from ._pool import UpstreamPool


#: Messages fetched per pool operation while streaming metadata.
METADATA_CHUNK = 25
#: The largest page `get_emails_metadata_stream` serves.
MAX_PAGE_SIZE = 500


class EmailMetadata(BaseModel):
    """One message's metadata, as `ImapClient.get_emails_metadata_stream` yields it.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    uid: int
    subject: str
    #: The From header, decoded (``Name <address>``); ``from`` in dumps.
    sender: str = Field(alias="from")
    #: The addresses of the To header.
    to: list[str]
    #: The Date header (None when missing or unreadable).
    date: datetime | None
    #: IMAP flags (``\\Seen``, ``\\Flagged``...).
    flags: tuple[str, ...]
    #: RFC822.SIZE in bytes.
    size: int


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

    async def get_emails_metadata_stream(
        self, page: int = 1, page_size: int = 10, *, mailbox: str = "INBOX"
    ) -> AsyncIterator[EmailMetadata]:
        """The metadata of one page of messages, newest first (highest UID first).

        Page 1 holds the `page_size` newest messages. The UID list is read
        once, then the page's messages are fetched in chunks, each chunk one
        pool operation with the same retry, reconnect and fallback as any
        other call; messages deleted meanwhile are left out.

        Raises:
            InvalidInput: `page` below 1, or `page_size` not in 1..500.
        """
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidInput(f"page must be >= 1 and page_size in 1..{MAX_PAGE_SIZE}")
        served = await self.run(lambda conn: conn.uids(mailbox), label="get_emails_metadata")
        newest_first = list(reversed(served.value))
        wanted = newest_first[(page - 1) * page_size : page * page_size]
        for start in range(0, len(wanted), METADATA_CHUNK):
            chunk = wanted[start : start + METADATA_CHUNK]

            async def fetch(conn: Any, chunk: list[int] = chunk) -> list[EmailMetadata]:
                return list(await conn.fetch_metadata(chunk, mailbox))

            fetched = await self.run(fetch, label="get_emails_metadata")
            for item in fetched.value:
                yield item

    async def health_check(self) -> HealthReport:
        """NOOP with its response time; see `UpstreamPool.health`."""
        return await self.pool.health(self.session_id, self.upstream)

    async def close(self) -> None:
        """Close this process's connection (the record turns ``closed``)."""
        await self.pool.release(self.session_id, self.upstream)
