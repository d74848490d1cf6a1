"""``/session-health``: one section per concern, and the bearer-token check.

Each section is an async check of the `ServerState` returning a
`HealthSection`. Redis is checked first: when it is unreachable the answer is
503 at once, without waiting on the other sections. A failing section marked
``critical`` makes the answer 503 ("unhealthy"); a failing non-critical one
makes it "degraded" (200), so a load balancer keeps the replica in rotation.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr

from .._heartbeat import list_workers, summarize_workers, unswept_problem
from .._redis import backend_errors
from ..exceptions import BackendUnavailable, SessionStoreError
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
    if expected is None:
        raise HTTPException(403, "health endpoint disabled: set SESSIONSTORE_HEALTH_TOKEN")
    given = credentials.credentials if credentials is not None else ""
    # Constant time: the comparison must not reveal how much of a guess was right.
    if credentials is None or not hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
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


#: The sections every server has; other concerns append theirs.
CORE_CHECKS: tuple[HealthCheck, ...] = (redis_section, sessions_section, workers_section)


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
