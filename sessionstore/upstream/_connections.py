"""The connection cache: each (session, upstream) slot this process holds and its socket.

`ConnectionCache` is shared by `UpstreamPool` (register, release, maintain)
and the attempt loop (run, health): it finds or creates a slot (`Entry`),
reads its record once, and checks a usable connection out of it (reuse,
refresh before the maximum age, probe after idling, reopen after a drop).
It knows nothing of retries or breakers.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .._ids import short_id
from ..exceptions import UpstreamError, UpstreamNotFound
from ._classify import classify
from ._connector import Connector
from ._records import UpstreamRecord, UpstreamRecords, UpstreamState
from ._settings import UpstreamSettings
from .credentials import Credentials

if TYPE_CHECKING:
    from ..store import SessionStore

logger = logging.getLogger("sessionstore.upstream")


@dataclass(eq=False)
class Entry:
    """A session's upstream in this process: its record, its socket, its clocks.

    Operations on one entry run one at a time (`lock`): a connection such as
    an IMAP session has a selected mailbox and cannot interleave two callers.
    A connector that multiplexes requests (``concurrent = True``: MCP) holds
    the lock only while a connection is checked out, not during the operation.
    """

    session_id: str
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The record as last read or written (spec and credential come from it).
    record: UpstreamRecord | None = None
    connection: Any = None
    #: Kept only to redact it from error texts; never logged or stored.
    secret: SecretStr | None = None
    #: Pool-clock times (monotonic seconds).
    opened_at: float = 0.0
    last_used: float = 0.0
    #: Wall-clock time of the last useful call (health output).
    last_activity: datetime | None = None
    #: Pool-clock time of the last success written to Redis, and the state written.
    recorded_at: float = -math.inf
    recorded_state: UpstreamState | None = None
    #: Pool-clock time until which a breaker refusal needs no new reconnect job.
    recovery_asked_until: float = -math.inf
    #: A connection opened since the attempt loop last looked (its resume state
    #: may need writing to the record).
    fresh: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(session id, upstream name)."""
        return (self.session_id, self.name)

    def age(self, now: float) -> float | None:
        """Seconds since the connection was opened, or None when none is open."""
        return None if self.connection is None else now - self.opened_at


class ConnectionCache:
    """The slots of one process, keyed by (session id, upstream name).

    Args:
        store: validates session ids and tells an ended session from a missing record.
        records: the connections' records in Redis.
        connectors: one per upstream kind.
        credentials: opens the sealed secret of a record to connect.
        settings: when a connection is refreshed or probed.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        store: SessionStore,
        records: UpstreamRecords,
        *,
        connectors: Mapping[str, Connector],
        credentials: Credentials,
        settings: UpstreamSettings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.records = records
        self.connectors = connectors
        self.credentials = credentials
        self.settings = settings
        self.clock = clock
        self._entries: dict[tuple[str, str], Entry] = {}

    def entry(self, session_id: str, upstream: str) -> Entry:
        """The slot of (session, upstream), created empty on first use."""
        key = (session_id, upstream)
        found = self._entries.get(key)
        if found is None:
            self.store.keys.session(session_id)  # validates the id before it is kept
            found = self._entries[key] = Entry(session_id, upstream)
        return found

    def get(self, session_id: str, upstream: str) -> Entry | None:
        """The slot of (session, upstream) if this process tracks it."""
        return self._entries.get((session_id, upstream))

    def entries(self, session_id: str | None = None) -> list[Entry]:
        """Every tracked slot (of one session when given), as a list safe to iterate
        while slots are forgotten."""
        return [e for e in self._entries.values() if session_id in (None, e.session_id)]

    def forget(self, entry: Entry) -> None:
        """Stop tracking `entry` (its connection must already be dropped)."""
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]

    def clear(self) -> None:
        """Stop tracking every slot (their connections must already be dropped)."""
        self._entries.clear()

    def open_connections(self) -> list[tuple[str, str]]:
        """(session id, upstream) of every connection open in this process."""
        return [key for key, entry in self._entries.items() if entry.connection is not None]

    def connector_for(self, record: UpstreamRecord) -> Connector:
        """The connector of the record's kind."""
        connector = self.connectors.get(record.spec.kind)
        if connector is None:
            raise UpstreamError(record.name, f"no connector for kind {record.spec.kind!r}")
        return connector

    async def record_of(self, entry: Entry) -> UpstreamRecord:
        """The entry's record, read from Redis the first time (one round trip).

        Raises:
            SessionGone / SessionNotFound: the session ended (its records went with it).
            UpstreamNotFound: the session has no upstream of that name.
        """
        if entry.record is None:
            record = await self.records.get(entry.session_id, entry.name)
            if record is None:
                self.forget(entry)
                await self.store.get(entry.session_id)  # raises if the session ended
                raise UpstreamNotFound(entry.name, "not registered for this session")
            entry.record, entry.recorded_state = record, record.state
        return entry.record

    async def checkout(self, entry: Entry, record: UpstreamRecord) -> Any:
        """A usable connection for `entry`: reused, refreshed, probed or newly opened.

        A connection known dead, past `refresh_after`, or failing its idle
        probe is replaced silently: that is upkeep, not a failed attempt.
        Faults while opening are raised for the caller to classify.
        """
        connector = self.connector_for(record)
        now = self.clock()
        conn = entry.connection
        if conn is not None and not conn.alive:
            logger.info(
                "%s/%s: connection was dropped; reopening", short_id(entry.session_id), entry.name
            )
            await self.drop(entry)
        elif (
            conn is not None
            and now - entry.opened_at >= self.settings.refresh_after.total_seconds()
        ):
            logger.info(
                "%s/%s: connection is %.0fs old; refreshing",
                short_id(entry.session_id),
                entry.name,
                now - entry.opened_at,
            )
            await self.drop(entry)
        elif (
            conn is not None
            and now - entry.last_used >= self.settings.probe_idle_after.total_seconds()
        ):
            try:
                await connector.probe(conn)
            except Exception as exc:  # classified only to log it; the connection is replaced
                logger.info(
                    "%s/%s: idle probe failed (%s); reopening",
                    short_id(entry.session_id),
                    entry.name,
                    classify(exc).reason,
                )
                await self.drop(entry)
        if entry.connection is None:
            secret = await self.credentials.open_stored(record.credential, upstream=entry.name)
            logger.info(
                "%s/%s: opening %s connection to %s",
                short_id(entry.session_id),
                entry.name,
                record.spec.kind,
                record.spec.address,
            )
            if record.resume is not None and getattr(connector, "handoff", None):
                # Continue the upstream's own session where another process left it.
                entry.connection = await connector.connect(  # type: ignore[call-arg]
                    record.spec, secret, resume=record.resume
                )
            else:
                entry.connection = await connector.connect(record.spec, secret)
            entry.secret = secret
            entry.opened_at = self.clock()
            entry.fresh = True
        entry.last_used = self.clock()
        return entry.connection

    async def drop(self, entry: Entry, *, only: Any = None) -> None:
        """Close the entry's connection here (its record is not touched).

        With `only`, close it only if it is still that connection: a concurrent
        caller may have opened a new one meanwhile.
        """
        if only is not None and entry.connection is not only:
            return
        conn, entry.connection = entry.connection, None
        if conn is not None and entry.record is not None:
            await self.connector_for(entry.record).close(conn)
