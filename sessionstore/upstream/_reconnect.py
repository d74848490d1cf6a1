"""Scheduling reconnect jobs: at most one per connection, fleet-wide.

When an operation has spent its attempts, or the upstream's breaker refuses,
the pool asks a `ReconnectScheduler` for a job. `ArqReconnects` enqueues the
arq job ``reconnect_upstream`` (``workers/reconnect.py``) with a job id built
from the session and upstream names (`KeySpace.reconnect_job_id`): while that
job is queued, deferred or running, arq refuses a second one with the same id,
however many replicas ask. The job re-queues itself with ``arq.Retry`` (same
id), so the whole reconnect loop stays one job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr
from redis.exceptions import RedisError

from .._ids import short_id
from .._keys import KeySpace
from ..breaker import Outcome
from ..exceptions import (
    BreakerOpen,
    SessionGone,
    SessionNotFound,
    UpstreamError,
    UpstreamRejected,
)
from ._classify import Action
from ._connector import Connector, describe
from ._gates import Gates, NoGates, Ticket, settle
from ._records import UpstreamRecord, UpstreamRecords, UpstreamState
from ._settings import UpstreamSettings
from .credentials import Credentials

if TYPE_CHECKING:
    from ..settings import SessionSettings, WorkerConfig


class FleetSettings(Protocol):
    """What `ArqReconnects.from_settings` reads of `Settings` (which imports this package)."""

    @property
    def session(self) -> SessionSettings:
        """The store's key prefix and shards."""
        ...

    @property
    def worker(self) -> WorkerConfig:
        """The worker fleet's queue name."""
        ...


logger = logging.getLogger("sessionstore.upstream")

#: The reconnect job's name; in the queue it is ``<key prefix>:reconnect_upstream``.
RECONNECT_JOB = "reconnect_upstream"

#: A refused reconnect waits at least this long, so a breaker that reports no
#: wait (a half-open breaker with every probe slot taken) causes no busy loop.
_MIN_BREAKER_DEFER = 0.5


def reconnect_job_name(key_prefix: str) -> str:
    """The arq function name of the reconnect job for a key prefix.

    Namespaced like every job of the fleet (``workers.context.job_name``): two
    deployments sharing a queue Redis never run each other's jobs.
    """
    return f"{key_prefix}:{RECONNECT_JOB}"


@runtime_checkable
class ReconnectScheduler(Protocol):
    """Asks the worker fleet to reconnect one upstream connection later.

    .. versionadded:: 0.1
    """

    async def schedule(self, session_id: str, upstream: str, *, delay: float) -> bool:
        """Queue a reconnect in `delay` seconds; False if one was already queued."""
        ...


class ArqReconnects:
    """`ReconnectScheduler` on an arq queue.

    Args:
        queue: an ``arq.ArqRedis`` for the job queue's Redis (not a cluster).
        keys: the store's key space (builds the job ids).
        queue_name: the arq queue the workers listen on.

    .. versionadded:: 0.1
    """

    def __init__(self, queue: Any, keys: KeySpace, *, queue_name: str) -> None:
        self._queue = queue
        self._keys = keys
        self._queue_name = queue_name

    @property
    def queue_name(self) -> str:
        """The arq queue the jobs go to."""
        return self._queue_name

    @classmethod
    def from_settings(cls, queue: Any, settings: FleetSettings) -> ArqReconnects:
        """Jobs for the worker fleet of `settings` (its key prefix and queue name)."""
        session = settings.session
        keys = KeySpace(session.key_prefix, session.shards)
        return cls(queue, keys, queue_name=settings.worker.queue_name or keys.job_queue())

    async def schedule(self, session_id: str, upstream: str, *, delay: float) -> bool:
        """Enqueue ``reconnect_upstream`` unless one is already queued for this connection.

        A queue that cannot be reached is logged and reported as False: the
        caller is already failing with the upstream's own error, and the next
        failure asks again.
        """
        job_id = self._keys.reconnect_job_id(session_id, upstream)
        try:
            job = await self._queue.enqueue_job(
                reconnect_job_name(self._keys.prefix),
                # SecretStr: arq logs job arguments, and a session id is a bearer secret.
                SecretStr(session_id),
                upstream,
                _job_id=job_id,
                _queue_name=self._queue_name,
                _defer_by=max(0.0, delay) or None,
            )
        except (RedisError, OSError) as exc:
            logger.warning("could not queue reconnect job %s: %s", job_id, type(exc).__name__)
            return False
        return job is not None


class ReconnectResult(BaseModel):
    """What one reconnect attempt did; the job turns ``retry``/``deferred`` into arq Retry.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: connected, retry (failed; try again in `delay`), deferred (the breaker
    #: refused; try again in `delay`), failed (given up), gone (the session or
    #: record ended), skipped (nothing to do: the record is not reconnecting).
    status: Literal["connected", "retry", "deferred", "failed", "gone", "skipped"]
    delay: float | None = None
    detail: str = ""
    response_time_ms: float | None = None


class Reconnector:
    """One reconnect attempt for one connection, as the reconnect job runs it.

    The worker does not keep the connection: it proves the upstream takes a
    new login again (connect, login, NOOP), records that fleet-wide, and
    closes it; the replica serving the session reconnects on its next call.
    With the breaker open it does not touch the upstream and defers until the
    breaker may half-open; when half-open, this attempt is one of the fleet's
    probes.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        records: UpstreamRecords,
        *,
        connectors: Iterable[Connector],
        credentials: Credentials,
        settings: UpstreamSettings,
        gates: Gates | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.records = records
        self.connectors = {c.kind: c for c in connectors}
        self.credentials = credentials
        self.settings = settings
        self.gates: Gates = gates or NoGates()
        self.clock = clock

    async def attempt(self, session_id: str, upstream: str) -> ReconnectResult:
        """Try once; never raises for upstream faults or an ended session."""
        try:
            return await self._attempt(session_id, upstream)
        except (SessionGone, SessionNotFound):
            return ReconnectResult(status="gone", detail="the session ended")
        except UpstreamError as exc:  # the record changed under us (state guard)
            return ReconnectResult(status="skipped", detail=str(exc))

    async def _attempt(self, session_id: str, upstream: str) -> ReconnectResult:
        record = await self.records.get(session_id, upstream)
        if record is None:
            return ReconnectResult(status="gone", detail="no record (session ended or removed)")
        if record.state is not UpstreamState.RECONNECTING:
            return ReconnectResult(status="skipped", detail=f"record is {record.state}")
        gate = await self.gates.gate(record.spec.breaker_name)
        try:
            ticket = await gate.admit()
        except BreakerOpen as exc:
            delay = max(exc.retry_after, _MIN_BREAKER_DEFER)
            await self._update(session_id, upstream, next_attempt_in=timedelta(seconds=delay))
            return ReconnectResult(status="deferred", delay=delay, detail=str(exc))
        return await self._probe(session_id, record, ticket)

    async def _probe(
        self, session_id: str, record: UpstreamRecord, ticket: Ticket
    ) -> ReconnectResult:
        connector = self.connectors.get(record.spec.kind)
        secret = None
        conn = None
        try:
            if connector is None:
                raise UpstreamRejected(record.name, f"no connector for kind {record.spec.kind!r}")
            secret = await self.credentials.open_stored(record.credential, upstream=record.name)
            conn = await connector.connect(record.spec, secret)
            started = self.clock()
            await connector.probe(conn)
            elapsed_ms = (self.clock() - started) * 1000
        except asyncio.CancelledError:
            await ticket.cancel()
            raise
        except Exception as exc:
            verdict = await settle(ticket, exc, connector)
            text = describe(verdict, exc, connector=connector, secret=secret)
            return await self._failed(session_id, record, verdict.action is Action.FAIL, text)
        finally:
            if conn is not None and connector is not None:
                await connector.close(conn)
        await ticket.finish(Outcome.SUCCESS)
        await self._update(
            session_id,
            record.name,
            state=UpstreamState.CONNECTED,
            success=True,
            attempts="reset",
            clear_next_attempt=True,
            response_time_ms=elapsed_ms,
        )
        logger.info("%s/%s: reconnect succeeded", short_id(session_id), record.name)
        return ReconnectResult(status="connected", response_time_ms=elapsed_ms)

    async def _failed(
        self, session_id: str, record: UpstreamRecord, fail_fast: bool, text: str
    ) -> ReconnectResult:
        attempts = record.attempts + 1
        policy = self.settings.reconnect_backoff
        if fail_fast or attempts >= policy.max_attempts:
            why = "not retryable" if fail_fast else f"{attempts} attempts spent"
            await self._update(
                session_id,
                record.name,
                state=UpstreamState.FAILED,
                error=text,
                attempts="incr",
                clear_next_attempt=True,
            )
            logger.warning("%s/%s: reconnect gave up (%s): %s", short_id(session_id),
                           record.name, why, text)  # fmt: skip
            return ReconnectResult(status="failed", detail=f"{why}: {text}")
        delay = policy.wait(attempts)
        await self._update(
            session_id,
            record.name,
            error=text,
            attempts="incr",
            next_attempt_in=timedelta(seconds=delay),
        )
        return ReconnectResult(status="retry", delay=delay, detail=text)

    async def _update(self, session_id: str, upstream: str, **changes: Any) -> None:
        await self.records.update(
            session_id, upstream, only_states=(UpstreamState.RECONNECTING,), **changes
        )
