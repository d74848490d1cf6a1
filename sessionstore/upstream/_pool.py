"""`UpstreamPool`: a process's upstream connections, reused, refreshed and retried.

Callers name a session and an upstream and hand over an operation; the pool
finds or opens the connection, runs the operation under the retry policy
(`classify`, `BackoffPolicy`), reports to the upstream's circuit breaker, falls back
to other upstreams when asked, and keeps the connection's record in Redis in
step. `ImapClient` is the managed IMAP client on top of it.

The attempt loop lives in ``_attempts.py`` and the connection cache (checkout:
reuse, refresh before the maximum age, probe after idling, reopen after a
drop) in ``_connections.py``; both are built here and neither imports this
module. This one holds the lifecycle, registration, release and maintenance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

from pydantic import SecretStr

from .._ids import short_id
from ..exceptions import (
    BackendUnavailable,
    InvalidInput,
    SessionGone,
    SessionNotFound,
    SessionStoreError,
    UpstreamError,
)
from ..store import EventFollower, SessionStore
from ..tasks import stop_tasks
from ._attempts import AttemptContext, AttemptLoop
from ._connections import ConnectionCache, Entry
from ._connector import Connector, HealthReport, Operation, Served
from ._gates import Gates, NoGates
from ._reconnect import ReconnectScheduler
from ._records import UpstreamRecord, UpstreamRecords, UpstreamState
from ._settings import UpstreamSettings
from ._spec import UpstreamSpec
from ._upkeep import (
    MaintenanceReport,
    PoolCensus,
    census,
    close_idle,
    close_on_session_end,
    ended_sessions,
)
from .credentials import Credentials

logger = logging.getLogger("sessionstore.upstream")

T = TypeVar("T")


class PoolState(StrEnum):
    """The pool's lifecycle: it cannot be reopened once closed."""

    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class UpstreamPool:
    """The upstream connections of one process, for many sessions.

    Args:
        store: the session store (records live next to its sessions).
        connectors: one per upstream kind (`ImapConnector` for ``imap``).
        credentials: seals secrets for Redis and opens them to connect.
        settings: retry, timeouts, lifetimes (`Settings().upstream`).
        gates: the circuit breakers (`BreakerGates`); none by default.
        reconnects: queues reconnect jobs (`ArqReconnects`); none by default.
        maintain_every: period of the background `maintain` pass (None: off).
        follow_events: close connections as soon as the session events say a
            session expired, was deleted or rotated (a blocking stream reader
            on the store's client); `maintain` catches the rest either way.
        probes_in_process: take half-open probe slots here too, instead of
            leaving probes to the reconnect jobs (for deployments without workers).
        clock: monotonic seconds (tests inject a fake one).
        sleep: how backoff waits (tests may inject a recorder).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        connectors: Iterable[Connector],
        credentials: Credentials,
        settings: UpstreamSettings | None = None,
        gates: Gates | None = None,
        reconnects: ReconnectScheduler | None = None,
        maintain_every: timedelta | None = timedelta(seconds=30),
        follow_events: bool = False,
        probes_in_process: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.settings = settings or UpstreamSettings()
        self.records = UpstreamRecords(
            store, max_per_session=self.settings.max_upstreams_per_session
        )
        self.credentials = credentials
        self.connectors = {c.kind: c for c in connectors}
        self.gates: Gates = gates or NoGates()
        self.reconnects = reconnects
        self.clock = clock
        self.connections = ConnectionCache(
            store,
            self.records,
            connectors=self.connectors,
            credentials=credentials,
            settings=self.settings,
            clock=clock,
        )
        self._maintain_every = maintain_every
        self._follow_events = follow_events
        self._tasks: list[asyncio.Task[None]] = []
        self._state = PoolState.UNOPENED
        self._loop = AttemptLoop(
            AttemptContext(
                connections=self.connections,
                records=self.records,
                gates=self.gates,
                settings=self.settings,
                reconnects=reconnects,
                clock=clock,
                sleep=sleep,
                probes_in_process=probes_in_process,
                require_open=self.require_open,
            )
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> UpstreamPool:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Start the background maintenance (if configured).

        Raises:
            SessionStoreError: the pool was already opened or closed.
        """
        if self._state is not PoolState.UNOPENED:
            raise SessionStoreError(f"an upstream pool cannot be opened when {self._state}")
        self._state = PoolState.OPENED
        if self._maintain_every is not None:
            self._tasks.append(asyncio.create_task(self._maintain_forever()))
        if self._follow_events:
            follower = EventFollower(self.store.redis, self.store.settings)
            ending = close_on_session_end(follower, self.session_ended, running=self._running)
            self._tasks.append(asyncio.create_task(ending))

    async def aclose(self) -> None:
        """Stop maintenance and close every connection (records are left as they are)."""
        if self._state is PoolState.CLOSED:
            return
        self._state = PoolState.CLOSED
        await stop_tasks(self._tasks)
        for entry in self.connections.entries():
            await self.drop(entry)
        self.connections.clear()

    def require_open(self) -> None:
        """Raise unless the pool is open (entered and not closed)."""
        if self._state is not PoolState.OPENED:
            raise SessionStoreError(f"the upstream pool is {self._state}; use `async with pool`")

    # -- registering and running -------------------------------------------------

    async def register(
        self,
        session_id: str,
        spec: UpstreamSpec,
        *,
        secret: SecretStr | None = None,
        credential_ref: str | None = None,
    ) -> UpstreamRecord:
        """Record an upstream connection for the session (one round trip).

        The secret is sealed first (encrypted, or replaced by its reference):
        plaintext never reaches Redis. Registering a name again replaces it
        and closes this process's old connection for it.

        Raises:
            InvalidInput: no connector for ``spec.kind``; bad credential input.
            SessionGone / SessionNotFound: the session cannot be used.
        """
        self.require_open()
        if spec.kind not in self.connectors:
            raise InvalidInput(f"no connector for upstream kind {spec.kind!r}")
        stored = self.credentials.seal_for(
            self.connectors[spec.kind], secret=secret, ref=credential_ref
        )
        record = await self.records.register(session_id, spec, stored)
        entry = self.connections.get(session_id, spec.name)
        if entry is not None:
            async with entry.lock:
                await self.drop(entry)
                entry.record, entry.recorded_state = record, record.state
        return record

    async def run(
        self,
        session_id: str,
        upstream: str,
        op: Operation[T],
        *,
        fallbacks: Sequence[str] = (),
        label: str | None = None,
    ) -> Served[T]:
        """Run ``await op(connection)`` with retry, breaker and fallback.

        The primary is tried first; each fallback is tried, in order, only when
        the ones before it were refused by their breaker or spent their
        attempts. A fail-fast fault (bad credentials, unknown mailbox) is
        raised at once: another upstream would not make it right.

        Returns:
            `Served`: the value, the upstream that served it, the attempts it
            took there, and the upstreams passed over.

        Raises:
            UpstreamRejected: a fail-fast fault.
            UpstreamUnavailable: every upstream tried spent its attempts (or
                was refused, when there were fallbacks).
            BreakerOpen: the only upstream's breaker refused the call.
            SessionGone / SessionNotFound: the session cannot be used.
        """
        self.require_open()
        what = label or str(getattr(op, "__name__", "operation"))
        return await self._loop.run_with_fallback(session_id, upstream, op, fallbacks, what)

    # -- connections ---------------------------------------------------------------

    def entry(self, session_id: str, upstream: str) -> Entry:
        """The slot of (session, upstream) in the connection cache, created empty on first use."""
        return self.connections.entry(session_id, upstream)

    async def drop(self, entry: Entry) -> None:
        """Close the entry's connection here (its record is not touched)."""
        await self.connections.drop(entry)

    def open_connections(self) -> list[tuple[str, str]]:
        """(session id, upstream) of every connection open in this process."""
        return self.connections.open_connections()

    def census(self) -> PoolCensus:
        """Open sockets and tracked connections by record state, in this process (no I/O)."""
        return census(self.connections.entries())

    # -- health, release, maintenance ---------------------------------------------

    async def health(self, session_id: str, upstream: str) -> HealthReport:
        """Probe the connection (IMAP NOOP) and report its health fields.

        The probe's round trip is stored in the record (``response_time_ms``).
        A breaker that refuses callers makes the report unhealthy without
        touching the upstream.
        """
        self.require_open()
        return await self._loop.health(session_id, upstream)

    async def release(self, session_id: str, upstream: str | None = None) -> int:
        """Close this process's connections of a session (one upstream or all).

        Records are marked ``closed`` unless the session has ended. Returns the
        number of connections closed here.
        """
        closed = 0
        for entry in self.connections.entries(session_id):
            if upstream is not None and entry.name != upstream:
                continue
            async with entry.lock:
                closed += entry.connection is not None
                await self.drop(entry)
                self.connections.forget(entry)
            try:
                await self.records.update(session_id, entry.name, state=UpstreamState.CLOSED)
            except (SessionGone, SessionNotFound, UpstreamError):
                pass  # the session or the record ended: nothing to mark
            except BackendUnavailable as exc:
                logger.warning("%s/%s: closed here, record not updated: %s",
                               short_id(session_id), entry.name, exc)  # fmt: skip
        return closed

    async def session_ended(self, session_id: str) -> int:
        """Forget a session whose end was announced (expired, deleted, rotated events).

        Closes its connections here without writing to Redis (its records are gone).
        """
        closed = 0
        for entry in self.connections.entries(session_id):
            async with entry.lock:
                closed += entry.connection is not None
                await self.drop(entry)
                self.connections.forget(entry)
        return closed

    async def maintain(self) -> MaintenanceReport:
        """One upkeep pass: close connections of ended sessions, aged and dead idle ones.

        Sessions are checked in one pipelined round trip (one per node on a cluster).
        """
        ids = {e.session_id for e in self.connections.entries()}
        ended = [await self.session_ended(sid) for sid in await ended_sessions(self.store, ids)]
        aged, dead = await close_idle(
            self.connections.entries(),
            self.drop,
            now=self.clock(),
            refresh_after=self.settings.refresh_after.total_seconds(),
        )
        return MaintenanceReport(ended=sum(ended), aged=aged, dead=dead)

    def _running(self) -> bool:
        # Background loops check this too: a cancellation that a client library turns
        # into a timeout (BackendUnavailable) must still end them once the pool closed.
        return self._state is PoolState.OPENED

    async def _maintain_forever(self) -> None:
        assert self._maintain_every is not None
        while self._running():
            await asyncio.sleep(self._maintain_every.total_seconds())
            try:
                await self.maintain()
            except SessionStoreError as exc:  # Redis down: try again next period
                if not self._running():
                    return
                logger.warning("upstream pool maintenance failed: %s", exc)
