"""The attempt loop: retry, reconnect, breaker outcomes, give-up and fallback.

For one upstream, each attempt takes permission from the breaker, checks a
connection out of the pool, runs the operation and classifies any fault
(`classify`):

- ``retry``: wait (backoff) and try again on the same connection;
- ``reconnect``: drop the connection, wait, open a new one, try again;
- ``fail``: raise `UpstreamRejected` now (a fault while logging in also marks
  the record ``failed``: no reconnect job would fix a bad password).

When the attempts are spent, the record turns ``reconnecting`` (attempts,
last error and next attempt time in Redis), a reconnect job is queued, and
`UpstreamUnavailable` is raised. A breaker that refuses callers does the same
without touching the upstream. Records are written on changes of state, and
for successes at most every ``record_interval``, so the steady state costs no
Redis round trip per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from .._ids import short_id
from ..breaker import Outcome
from ..exceptions import (
    BreakerOpen,
    InvalidInput,
    SessionGone,
    SessionNotFound,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from ._classify import Action, Verdict
from ._connections import ConnectionCache, Entry
from ._connector import HealthReport, Operation, Served, describe
from ._gates import Gate, Gates, Ticket, settle
from ._reconnect import ReconnectScheduler
from ._records import UpstreamRecord, UpstreamRecords, UpstreamState
from ._settings import UpstreamSettings

logger = logging.getLogger("sessionstore.upstream")

T = TypeVar("T")

#: A refused connection asks for a reconnect job at most once per this many seconds.
_MIN_REFUSAL_PERIOD = 1.0


@dataclass(frozen=True)
class AttemptContext:
    """What the attempt loop works with: the pool's parts, not the pool itself."""

    connections: ConnectionCache
    records: UpstreamRecords
    gates: Gates
    settings: UpstreamSettings
    #: Queues reconnect jobs once attempts are spent (None: no queue).
    reconnects: ReconnectScheduler | None
    #: Monotonic seconds.
    clock: Callable[[], float]
    #: How backoff waits.
    sleep: Callable[[float], Awaitable[None]]
    #: Take half-open probe slots here (no workers to probe).
    probes_in_process: bool
    #: Raises unless the pool is open: a pool closed meanwhile opens nothing new.
    require_open: Callable[[], None]


class AttemptLoop:
    """Runs operations on the connection cache (one instance per pool).

    Written by hand rather than with stamina or tenacity: between attempts it
    asks the fleet's breaker for permission, may drop and reopen the
    connection, and on giving up writes the record and queues a reconnect job
    (see docs/development.md).
    """

    def __init__(self, ctx: AttemptContext) -> None:
        self.ctx = ctx

    # -- fallback ------------------------------------------------------------------

    async def run_with_fallback(
        self, session_id: str, upstream: str, op: Operation[T], fallbacks: Sequence[str], what: str
    ) -> Served[T]:
        names = [upstream, *fallbacks]
        if len(set(names)) != len(names):
            raise InvalidInput("an upstream is named twice among the primary and fallbacks")
        skipped: list[tuple[str, str]] = []
        refusals: list[BreakerOpen | UpstreamUnavailable] = []
        for name in names:
            try:
                value, attempts = await self.run_on(session_id, name, op, what)
            except (BreakerOpen, UpstreamUnavailable) as exc:
                if not fallbacks:
                    raise
                reason = "breaker_open" if isinstance(exc, BreakerOpen) else exc.reason
                skipped.append((name, reason))
                refusals.append(exc)
                logger.warning(
                    "%s/%s: %s not served (%s)", short_id(session_id), name, what, reason
                )
                continue
            if skipped:
                logger.info("%s/%s: %s served by fallback", short_id(session_id), name, what)
            return Served(value=value, upstream=name, attempts=attempts, skipped=tuple(skipped))
        summary = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        waits = [e.retry_after for e in refusals if e.retry_after is not None]
        raise UpstreamUnavailable(
            upstream,
            f"{what}: every upstream failed ({summary})",
            reason="all_failed",
            attempts=sum(getattr(e, "attempts", 0) for e in refusals),
            retry_after=min(waits) if waits else None,
        ) from refusals[-1]

    # -- one upstream ----------------------------------------------------------------

    async def run_on(
        self, session_id: str, name: str, op: Operation[T], what: str
    ) -> tuple[T, int]:
        cache = self.ctx.connections
        entry = cache.entry(session_id, name)
        known = entry.record
        if known is not None and getattr(cache.connector_for(known), "concurrent", False):
            # A multiplexing connection with its record at hand: no lock on the hot path.
            return await self._attempts(
                entry, known, cache.connector_for(known), op, what, shared=True
            )
        async with entry.lock:
            record = await cache.record_of(entry)
            connector = cache.connector_for(record)
            if not getattr(connector, "concurrent", False):
                return await self._attempts(entry, record, connector, op, what)
        return await self._attempts(entry, record, connector, op, what, shared=True)

    async def _checkout(self, entry: Entry, record: UpstreamRecord, shared: bool) -> Any:
        cache = self.ctx.connections
        if not shared:
            conn = await cache.checkout(entry, record)
        elif self._usable(entry):
            conn = entry.connection
            entry.last_used = self.ctx.clock()
        else:
            async with entry.lock:  # one caller opens; the others then share it
                conn = await cache.checkout(entry, record)
        if entry.fresh:
            entry.fresh = False
            await self._note_resume(entry, cache.connector_for(record), conn)
        return conn

    def _usable(self, entry: Entry) -> bool:
        """A shared connection that needs no upkeep now (alive, young, not idle)."""
        conn, now, settings = entry.connection, self.ctx.clock(), self.ctx.settings
        return (
            conn is not None
            and conn.alive
            and now - entry.opened_at < settings.refresh_after.total_seconds()
            and now - entry.last_used < settings.probe_idle_after.total_seconds()
        )

    async def _note_resume(self, entry: Entry, connector: Any, conn: Any) -> None:
        """Keep the record's resume state in step with a newly opened connection."""
        handoff = getattr(connector, "handoff", None)
        if handoff is None or entry.record is None:
            return
        resume = handoff(conn)
        if resume != entry.record.resume:
            await self._write(entry, resume=resume)

    async def _attempts(
        self,
        entry: Entry,
        record: UpstreamRecord,
        connector: Any,
        op: Operation[T],
        what: str,
        *,
        shared: bool = False,
    ) -> tuple[T, int]:
        ctx, cache = self.ctx, self.ctx.connections
        session_id, name = entry.session_id, entry.name
        gate = await ctx.gates.gate(record.spec.breaker_name)
        policy = ctx.settings.backoff
        previous: float | None = None
        for attempt in range(1, policy.max_attempts + 1):
            ctx.require_open()  # a pool closed meanwhile opens nothing new
            ticket = await self._admit(entry, record, gate)
            connecting = True
            conn = None
            try:
                conn = await self._checkout(entry, record, shared)
                connecting = False
                value = await op(conn)
                fault = connector.result_fault(value)
                if fault is not None:
                    raise fault
            except asyncio.CancelledError:
                await ticket.cancel()
                raise
            except Exception as exc:
                verdict = await settle(ticket, exc, connector)
                text = self._describe(entry, verdict, exc)
                if verdict.action is Action.RECONNECT or connecting:
                    await cache.drop(entry, only=conn)
                if verdict.action is Action.FAIL:
                    if connecting:
                        await self._write(entry, state=UpstreamState.FAILED, error=text)
                    raise UpstreamRejected(name, text, reason=verdict.reason) from exc
                if attempt == policy.max_attempts:
                    delay = await self._give_up(entry, text)
                    raise UpstreamUnavailable(
                        name,
                        f"{what} failed {attempt} times; last: {text}",
                        reason=verdict.reason,
                        attempts=attempt,
                        retry_after=delay,
                    ) from exc
                previous = policy.wait(attempt, previous=previous)
                logger.warning(
                    "%s/%s: %s failed (attempt %d/%d): %s; retrying in %.2fs",
                    short_id(session_id), name, what, attempt, policy.max_attempts,
                    verdict.reason, previous,
                )  # fmt: skip
                await ctx.sleep(previous)
                continue
            await ticket.finish(Outcome.SUCCESS)
            entry.last_activity = datetime.now(UTC)
            await self._note_success(entry)
            return value, attempt
        raise AssertionError("unreachable")  # pragma: no cover

    async def _admit(self, entry: Entry, record: UpstreamRecord, gate: Gate) -> Ticket:
        """Permission from the breaker; on refusal, leave the probing to a reconnect job."""
        name = record.spec.breaker_name
        try:
            if not gate.lets_callers_through and not self.ctx.probes_in_process:
                raise BreakerOpen(name, gate.retry_after())
            return await gate.admit()
        except BreakerOpen as exc:
            await self._await_recovery(entry, exc.retry_after)
            raise

    async def _await_recovery(self, entry: Entry, retry_after: float) -> None:
        # Once per connection and refusal period: further refused calls cost no round trip.
        now = self.ctx.clock()
        if now < entry.recovery_asked_until:
            return
        entry.recovery_asked_until = now + max(retry_after, _MIN_REFUSAL_PERIOD)
        await self._write(
            entry,
            state=UpstreamState.RECONNECTING,
            error="breaker_open: the upstream's circuit breaker refuses calls",
            next_attempt_in=timedelta(seconds=retry_after),
        )
        await self._schedule(entry, retry_after)

    async def _give_up(self, entry: Entry, text: str) -> float:
        attempts = (entry.record.attempts if entry.record else 0) + 1
        delay = self.ctx.settings.reconnect_backoff.wait(attempts)
        await self._write(
            entry,
            state=UpstreamState.RECONNECTING,
            error=text,
            attempts="incr",
            next_attempt_in=timedelta(seconds=delay),
        )
        await self._schedule(entry, delay)
        return delay

    async def _schedule(self, entry: Entry, delay: float) -> None:
        if self.ctx.reconnects is not None:
            await self.ctx.reconnects.schedule(entry.session_id, entry.name, delay=delay)

    async def _note_success(self, entry: Entry) -> None:
        interval = self.ctx.settings.record_interval.total_seconds()
        fresh = self.ctx.clock() - entry.recorded_at < interval
        if entry.recorded_state is UpstreamState.CONNECTED and fresh:
            return
        await self._write(
            entry,
            state=UpstreamState.CONNECTED,
            success=True,
            attempts="reset",
            clear_next_attempt=True,
        )

    async def _write(self, entry: Entry, **changes: Any) -> UpstreamRecord:
        """Update the record; an ended session or a removed record closes the connection
        here and re-raises."""
        try:
            record = await self.ctx.records.update(entry.session_id, entry.name, **changes)
        except (SessionGone, SessionNotFound, UpstreamNotFound):  # removed: stop using it too
            await self.ctx.connections.drop(entry)
            self.ctx.connections.forget(entry)
            raise
        entry.record, entry.recorded_state = record, record.state
        entry.recorded_at = self.ctx.clock()
        return record

    def _describe(self, entry: Entry, verdict: Verdict, exc: BaseException) -> str:
        connectors = self.ctx.connections.connectors
        connector = connectors.get(entry.record.spec.kind) if entry.record else None
        return describe(verdict, exc, connector=connector, secret=entry.secret)

    # -- health ------------------------------------------------------------------------

    async def health(self, session_id: str, name: str) -> HealthReport:
        ctx, cache = self.ctx, self.ctx.connections
        entry = cache.entry(session_id, name)
        async with entry.lock:
            record = await cache.record_of(entry)
            gate = await ctx.gates.gate(record.spec.breaker_name)
            try:
                ticket = await self._admit(entry, record, gate)
            except BreakerOpen as exc:
                return self._report(entry, None, f"breaker_open: {exc}")
            try:
                conn = await self._checkout(entry, record, False)
                started = ctx.clock()
                await cache.connector_for(record).probe(conn)
                elapsed_ms = (ctx.clock() - started) * 1000
            except asyncio.CancelledError:
                await ticket.cancel()
                raise
            except Exception as exc:
                verdict = await settle(ticket, exc, cache.connector_for(record))
                text = self._describe(entry, verdict, exc)
                await cache.drop(entry)
                await self._write(entry, error=text)
                return self._report(entry, None, text)
            await ticket.finish(Outcome.SUCCESS)
            entry.last_activity = datetime.now(UTC)
            await self._write(
                entry,
                state=UpstreamState.CONNECTED,
                success=True,
                attempts="reset",
                clear_next_attempt=True,
                response_time_ms=elapsed_ms,
            )
            return self._report(entry, elapsed_ms, None)

    def _report(self, entry: Entry, elapsed_ms: float | None, error: str | None) -> HealthReport:
        record = entry.record
        assert record is not None
        return HealthReport(
            healthy=error is None,
            timestamp=datetime.now(UTC),
            host=record.spec.endpoint[0],
            port=record.spec.endpoint[1],
            address=record.spec.address,
            error_count=record.attempts,
            response_time_ms=elapsed_ms,
            last_activity=entry.last_activity or record.last_success,
            error=error,
            session_id=entry.session_id,
            upstream=entry.name,
            state=record.state.value,
            connection_age_s=entry.age(self.ctx.clock()),
        )
