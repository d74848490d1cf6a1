"""``/session-health``: one section per concern, and the bearer-token check.

Each section is an async check of the `ServerState` returning a
`HealthSection`. Redis is checked first: when it is unreachable the answer is
503 at once, without waiting on the other sections. A failing section marked
``critical`` makes the answer 503 ("unhealthy"); a failing non-critical one
makes it "degraded" (200), so a load balancer keeps the replica in rotation.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr

from .._redis import backend_errors
from ..breaker import BreakerHealth, BreakerState, BreakerStatus
from ..exceptions import BackendUnavailable, SessionStoreError
from ..fleet import list_workers, summarize_workers, unswept_problem
from ..upstream import read_upstream_totals
from ._auth import check_bearer
from ._state import ServerState


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


#: A health check: reads what it needs from the server state.
HealthCheck = Callable[[ServerState], Awaitable[HealthSection]]


def check_token(
    expected: SecretStr | None, credentials: HTTPAuthorizationCredentials | None
) -> None:
    """Refuse the call unless it carries ``Authorization: Bearer <expected>``.

    Raises:
        HTTPException: 403 when no token is configured, 401 for a missing or wrong one.
    """
    check_bearer(
        expected,
        credentials,
        disabled="health endpoint disabled: set SESSIONSTORE_HEALTH_TOKEN",
    )


async def ping(state: ServerState) -> float:
    """One Redis PING; returns its round trip in seconds (recorded in the metrics).

    Raises:
        BackendUnavailable: Redis did not answer.
    """
    started = time.perf_counter()
    with backend_errors("ping"):
        await state.redis.ping()
    elapsed = time.perf_counter() - started
    state.metrics.redis_latency.observe(elapsed)
    return elapsed


async def redis_section(state: ServerState) -> HealthSection:
    """Redis connectivity and PING latency (critical)."""
    try:
        latency = await ping(state)
    except BackendUnavailable as exc:
        return HealthSection("redis", False, {"status": "unreachable", "error": str(exc)}, True)
    return HealthSection(
        "redis", True, {"status": "connected", "latency_ms": round(latency * 1000, 3)}, True
    )


async def sessions_section(state: ServerState) -> HealthSection:
    """Session counts and sweeper lag, read in O(shards) (`SessionStore.counts`)."""
    counts = await state.store.counts()
    lag = counts.sweeper_lag
    lagging = lag > state.settings.health_max_sweeper_lag
    data = {
        # Live records: active plus expired ones the sweeper has not reached yet.
        "total": counts.active + counts.overdue,
        "active": counts.active,
        "expired": counts.overdue,
        "lifetime": counts.totals,
        "sweeper_lag_seconds": lag.total_seconds(),
        "oldest_overdue": counts.oldest_overdue.isoformat() if counts.oldest_overdue else None,
        "at": counts.at.isoformat(),
    }
    if lagging:
        data["problem"] = "the sweeper lags: are the workers running?"
    return HealthSection("sessions", not lagging, data)


async def workers_section(state: ServerState) -> HealthSection:
    """The worker fleet by its heartbeats: live and dead workers, the newest sweep.

    Fails (``degraded``) only when no worker is live while the oldest overdue
    session has waited past ``health_max_sweeper_lag`` (`unswept_problem`): a
    rolling restart of the workers does not flip the health of every replica,
    sessions piling up with nobody to expire them does.
    """
    settings = state.settings
    workers = await list_workers(
        state.redis, state.store.keys, dead_after=settings.worker_dead_after
    )
    data = summarize_workers(workers)
    problem = None
    if not data["live"]:
        # The lag matters only when nobody sweeps: read it only then.
        lag = (await state.store.counts()).sweeper_lag
        problem = unswept_problem(0, lag, settings.health_max_sweeper_lag)
    if problem:
        data["problem"] = problem
    return HealthSection("workers", problem is None, data)


#: What each Redis-down policy does to guarded calls (for the problem line).
_POLICY_EFFECT = {
    "fail_open": "guarded calls follow the last known state and are not recorded",
    "fail_closed": "guarded calls are refused",
}


def _not_closed(status: BreakerStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "state": status.state.value,
        "since": _iso(status.changed_at),
        "cause": status.cause or None,
        "open_until": _iso(status.open_until),
        "actor": status.actor or None,
        "reason": status.reason or None,
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _replica_breakers(health: BreakerHealth) -> dict[str, Any]:
    """What this replica's registry knows, without I/O (`BreakerRegistry.health`)."""
    return {
        "redis_reachable": health.redis_reachable,
        "down_since": _iso(health.down_since),
        "last_error": health.last_error,
        "redis_down_policy": health.policy,
        "push_live": health.push_live,
        "staleness_bound_seconds": health.staleness_bound.total_seconds(),
        "outcomes_dropped": health.outcomes_dropped,
        "local": {name: state.value for name, state in health.breakers.items()},
    }


async def breakers_section(state: ServerState) -> HealthSection:
    """The fleet's breakers from Redis (counts by state, every one not closed) and this
    replica's registry (Redis reachability, the Redis-down policy, push, local views).

    Breakers that are open, half-open or forced never fail the section: an open
    breaker is the fleet shielding itself from a failing upstream, the same on
    every replica, and readiness must not hang on an upstream (alert on
    ``sessionstore_breaker_state`` instead). It fails (``degraded``) when this
    replica's breakers cannot reach Redis: their views may be stale and the
    Redis-down policy decides the guarded calls.
    """
    health = state.breakers.health()
    problem = None
    if not health.redis_reachable:
        problem = (
            f"this replica's breakers cannot reach Redis (since {_iso(health.down_since)}); "
            f"policy {health.policy}: {_POLICY_EFFECT[health.policy]}"
        )
    data: dict[str, Any] = {}
    try:
        statuses = sorted(await state.breakers.admin.statuses(), key=lambda s: s.name)
    except BackendUnavailable as exc:
        problem = problem or f"could not read the breakers: {exc}"
    else:
        counted = Counter(status.state for status in statuses)
        data["known"] = len(statuses)
        data["by_state"] = {s.value: counted.get(s, 0) for s in BreakerState}
        data["not_closed"] = [
            _not_closed(s) for s in statuses if s.state is not BreakerState.CLOSED
        ]
    data["replica"] = _replica_breakers(health)
    if problem:
        data["problem"] = problem
    return HealthSection("breakers", problem is None, data)


async def _reconnect_jobs(state: ServerState) -> tuple[dict[str, Any], str | None]:
    queue = state.upstreams.queue
    if queue is None:
        return {"enabled": False, "why_off": state.upstreams.queue_off}, None
    jobs: dict[str, Any] = {"enabled": True, "queue": queue.name}
    try:
        latency = await queue.ping()
    except BackendUnavailable as exc:
        jobs["queue_reachable"] = False
        return jobs, f"the reconnect-job queue is unreachable: {exc}"
    jobs.update(queue_reachable=True, latency_ms=round(latency * 1000, 3))
    return jobs, None


async def upstreams_section(state: ServerState) -> HealthSection:
    """This replica's upstream pool (no I/O), whether it can queue reconnect jobs (one
    PING of the queue's Redis) and the fleet-wide counters (O(shards)).

    Bounded on purpose: it lists no connection. Which connections are unhealthy
    would need every session's records (a scan); ask per session with
    ``GET /sessions/{id}/upstreams/{name}/health``. Unhealthy upstreams never
    fail the section (an IMAP provider's outage must not take replicas out of
    rotation); an unreachable queue does (``degraded``): failing connections
    would get no reconnect job.
    """
    census = state.upstreams.pool.census()
    data: dict[str, Any] = {
        "replica": {"open_sockets": census.open_connections, "by_state": census.by_state}
    }
    data["reconnect_jobs"], problem = await _reconnect_jobs(state)
    try:
        totals = await read_upstream_totals(state.store)
    except BackendUnavailable as exc:
        problem = problem or f"could not read the upstream counters: {exc}"
    else:
        data["fleet"] = totals.report()
    if problem:
        data["problem"] = problem
    return HealthSection("upstreams", problem is None, data)


#: The sections every server has; other concerns append theirs.
CORE_CHECKS: tuple[HealthCheck, ...] = (
    redis_section,
    sessions_section,
    workers_section,
    breakers_section,
    upstreams_section,
)


async def _run(check: HealthCheck, state: ServerState) -> HealthSection:
    try:
        return await check(state)
    except SessionStoreError as exc:
        name = getattr(check, "__name__", "check").removesuffix("_section")
        return HealthSection(name, False, {"error": str(exc)}, critical=False)


async def session_health(state: ServerState) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/session-health``."""
    first, *rest = state.health_checks or list(CORE_CHECKS)
    sections = [await _run(first, state)]
    if sections[0].ok or not sections[0].critical:
        sections += await asyncio.gather(*(_run(check, state) for check in rest))
    if any(s.critical and not s.ok for s in sections):
        status, code = "unhealthy", 503
    elif all(s.ok for s in sections):
        status, code = "healthy", 200
    else:
        status, code = "degraded", 200
    body: dict[str, Any] = {"status": status}
    for section in sections:
        body[section.name] = section.data
    return code, body
