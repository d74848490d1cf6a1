"""The store's health, computed once for the server (``/session-health``) and the CLI
(``sessionstore health``).

Each concern is a section (`HealthSection`): Redis (critical), sessions and
the sweeper's lag, the worker fleet, the fleet's breakers and the fleet-wide
upstream counters, all read from Redis through `HealthSources`. `gather`
runs a list of checks, Redis first: when it is unreachable nothing else is
asked. `verdict` folds the sections into healthy / degraded / unhealthy. The
server adds what only a replica knows (its breaker registry, its upstream
pool) to the sections; the CLI prints them as a table.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._redis import RedisClient, backend_errors
from .breaker import BreakerAdmin, BreakerState, BreakerStatus
from .exceptions import BackendUnavailable, SessionStoreError
from .fleet import list_workers, summarize_workers, unswept_problem
from .upstream import read_upstream_totals

if TYPE_CHECKING:
    from .store import SessionStore

C = TypeVar("C")


@dataclass(frozen=True)
class HealthSection:
    """One concern's part of the health answer.

    .. versionadded:: 0.1
    """

    name: str
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    #: When a critical section fails the whole answer is 503.
    critical: bool = False


@dataclass(frozen=True)
class HealthSources:
    """What the checks read, and the thresholds they judge by."""

    store: SessionStore
    breakers: BreakerAdmin
    #: Sessions overdue for longer mean the sweeper lags.
    max_sweeper_lag: timedelta
    #: A worker whose heartbeat is older is dead.
    worker_dead_after: timedelta
    #: Called with each PING's round trip in seconds (the server's latency metric).
    observe_ping: Callable[[float], None] | None = None


async def ping(redis: RedisClient) -> float:
    """One Redis PING; returns its round trip in seconds.

    Raises:
        BackendUnavailable: Redis did not answer.
    """
    started = time.perf_counter()
    with backend_errors("ping"):
        await redis.ping()
    return time.perf_counter() - started


async def redis_section(src: HealthSources) -> HealthSection:
    """Redis connectivity and PING latency (critical)."""
    try:
        latency = await ping(src.store.redis)
    except BackendUnavailable as exc:
        return HealthSection("redis", False, {"status": "unreachable", "error": str(exc)}, True)
    if src.observe_ping is not None:
        src.observe_ping(latency)
    return HealthSection(
        "redis", True, {"status": "connected", "latency_ms": round(latency * 1000, 3)}, True
    )


async def sessions_section(src: HealthSources) -> HealthSection:
    """Session counts and sweeper lag, read in O(shards) (`SessionStore.counts`)."""
    counts = await src.store.counts()
    lag = counts.sweeper_lag
    lagging = lag > src.max_sweeper_lag
    data = {
        # Live records: active plus expired ones the sweeper has not reached yet.
        "total": counts.active + counts.overdue,
        "active": counts.active,
        "expired": counts.overdue,
        "lifetime": counts.totals,
        "sweeper_lag_seconds": lag.total_seconds(),
        "oldest_overdue": _iso(counts.oldest_overdue),
        "at": counts.at.isoformat(),
    }
    if lagging:
        data["problem"] = "the sweeper lags: are the workers running?"
    return HealthSection("sessions", not lagging, data)


async def workers_section(src: HealthSources) -> HealthSection:
    """The worker fleet by its heartbeats: live and dead workers, the newest sweep.

    Fails (``degraded``) only when no worker is live while the oldest overdue
    session has waited past ``max_sweeper_lag`` (`unswept_problem`): a rolling
    restart of the workers does not flip the health of every replica,
    sessions piling up with nobody to expire them does.
    """
    store = src.store
    workers = await list_workers(store.redis, store.keys, dead_after=src.worker_dead_after)
    data = summarize_workers(workers)
    problem = None
    if not data["live"]:
        # The lag matters only when nobody sweeps: read it only then.
        lag = (await store.counts()).sweeper_lag
        problem = unswept_problem(0, lag, src.max_sweeper_lag)
    if problem:
        data["problem"] = problem
    return HealthSection("workers", problem is None, data)


def not_closed(status: BreakerStatus) -> dict[str, Any]:
    """A breaker that is not closed, as health reports name it."""
    return {
        "name": status.name,
        "state": status.state.value,
        "since": _iso(status.changed_at),
        "cause": status.cause or None,
        "open_until": _iso(status.open_until),
        "actor": status.actor or None,
        "reason": status.reason or None,
    }


async def breakers_section(src: HealthSources) -> HealthSection:
    """The fleet's breakers from Redis: counts by state and every one not closed.

    Breakers that are open, half-open or forced never fail the section: an
    open breaker is the fleet shielding itself from a failing upstream, the
    same on every replica, and readiness must not hang on an upstream (alert
    on ``sessionstore_breaker_state`` instead). It fails (``degraded``) only
    when the breakers cannot be read.
    """
    try:
        statuses = sorted(await src.breakers.statuses(), key=lambda s: s.name)
    except BackendUnavailable as exc:
        return HealthSection("breakers", False, {"problem": f"could not read the breakers: {exc}"})
    counted = Counter(status.state for status in statuses)
    data: dict[str, Any] = {
        "known": len(statuses),
        "by_state": {s.value: counted.get(s, 0) for s in BreakerState},
        "not_closed": [not_closed(s) for s in statuses if s.state is not BreakerState.CLOSED],
    }
    return HealthSection("breakers", True, data)


async def upstreams_section(src: HealthSources) -> HealthSection:
    """The fleet-wide upstream counters (``fleet``: registrations, reconnects..., O(shards)).

    Bounded on purpose: it lists no connection. Unhealthy upstreams never fail
    the section (an IMAP provider's outage must not take replicas out of
    rotation); unreadable counters do (``degraded``).
    """
    try:
        totals = await read_upstream_totals(src.store)
    except BackendUnavailable as exc:
        problem = f"could not read the upstream counters: {exc}"
        return HealthSection("upstreams", False, {"problem": problem})
    return HealthSection("upstreams", True, {"fleet": totals.report()})


#: The sections computed from Redis alone, Redis first.
STORE_CHECKS: tuple[Callable[[HealthSources], Awaitable[HealthSection]], ...] = (
    redis_section,
    sessions_section,
    workers_section,
    breakers_section,
    upstreams_section,
)


async def _run(check: Callable[[C], Awaitable[HealthSection]], context: C) -> HealthSection:
    try:
        return await check(context)
    except SessionStoreError as exc:
        name = getattr(check, "__name__", "check").removesuffix("_section")
        return HealthSection(name, False, {"error": str(exc)}, critical=False)


async def gather(
    checks: Sequence[Callable[[C], Awaitable[HealthSection]]], context: C
) -> list[HealthSection]:
    """Run the first check, then (unless it failed critically) the others at once.

    A check that raises a `SessionStoreError` becomes a failed, non-critical section.
    """
    first, *rest = checks
    sections = [await _run(first, context)]
    if sections[0].ok or not sections[0].critical:
        sections += await asyncio.gather(*(_run(check, context) for check in rest))
    return sections


def verdict(
    sections: Sequence[HealthSection],
) -> tuple[Literal["healthy", "degraded", "unhealthy"], int]:
    """The overall status and its HTTP code: a failed critical section is 503
    ("unhealthy"), any other failed one "degraded" (200, kept in rotation)."""
    if any(s.critical and not s.ok for s in sections):
        return "unhealthy", 503
    if all(s.ok for s in sections):
        return "healthy", 200
    return "degraded", 200


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
