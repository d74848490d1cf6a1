"""``/session-health``: the store's health sections plus what this replica knows, and
the bearer-token check.

The sections are computed in `sessionstore._health` (the CLI's ``health``
reads the same ones); here each is a check of the `ServerState`, and the
breaker and upstream sections add this replica's registry, pool and
reconnect-job queue. Redis is checked first: when it is unreachable the
answer is 503 at once, without waiting on the other sections. A failing
section marked ``critical`` makes the answer 503 ("unhealthy"); a failing
non-critical one makes it "degraded" (200), so a load balancer keeps the
replica in rotation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.security import HTTPAuthorizationCredentials

from .. import _health as store_health
from .._health import HealthSection
from ..breaker import BreakerHealth
from ..exceptions import BackendUnavailable
from ._auth import AccessTokens, Role, require_role
from ._state import HealthCheck, ServerState


def check_token(access: AccessTokens, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Refuse the call unless it carries ``Authorization: Bearer <a health token>``.

    Raises:
        HTTPException: 403 when no health token is configured, 401 for a missing or
            wrong one (a token of another role included).
    """
    require_role(
        access,
        credentials,
        Role.HEALTH,
        disabled="health endpoint disabled: set SESSIONSTORE_HEALTH_TOKEN",
    )


async def ping(state: ServerState) -> float:
    """One Redis PING; returns its round trip in seconds (recorded in the metrics).

    Raises:
        BackendUnavailable: Redis did not answer.
    """
    elapsed = await store_health.ping(state.redis)
    state.metrics.redis_latency.observe(elapsed)
    return elapsed


async def redis_section(state: ServerState) -> HealthSection:
    """Redis connectivity and PING latency (critical)."""
    return await store_health.redis_section(state.health_sources())


async def sessions_section(state: ServerState) -> HealthSection:
    """Session counts and sweeper lag (`sessionstore._health.sessions_section`)."""
    return await store_health.sessions_section(state.health_sources())


async def workers_section(state: ServerState) -> HealthSection:
    """The worker fleet by its heartbeats (`sessionstore._health.workers_section`)."""
    return await store_health.workers_section(state.health_sources())


#: What each Redis-down policy does to guarded calls (for the problem line).
_POLICY_EFFECT = {
    "fail_open": "guarded calls follow the last known state and are not recorded",
    "fail_closed": "guarded calls are refused",
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
    """The fleet's breakers from Redis (`sessionstore._health.breakers_section`) and this
    replica's registry (Redis reachability, the Redis-down policy, push, local views).

    Open breakers never fail the section. It fails (``degraded``) when this
    replica's breakers cannot reach Redis: their views may be stale and the
    Redis-down policy decides the guarded calls.
    """
    health = state.breakers.health()
    fleet = await store_health.breakers_section(state.health_sources())
    problem = None
    if not health.redis_reachable:
        problem = (
            f"this replica's breakers cannot reach Redis (since {_iso(health.down_since)}); "
            f"policy {health.policy}: {_POLICY_EFFECT[health.policy]}"
        )
    data = dict(fleet.data)
    problem = problem or data.pop("problem", None)
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
    PING of the queue's Redis) and the fleet-wide counters
    (`sessionstore._health.upstreams_section`).

    Which connections are unhealthy would need every session's records (a
    scan); ask per session with ``GET /sessions/{id}/upstreams/{name}/health``.
    An unreachable queue fails the section (``degraded``): failing
    connections would get no reconnect job.
    """
    census = state.upstreams.pool.census()
    data: dict[str, Any] = {
        "replica": {"open_sockets": census.open_connections, "by_state": census.by_state}
    }
    data["reconnect_jobs"], problem = await _reconnect_jobs(state)
    fleet = await store_health.upstreams_section(state.health_sources())
    data.update(fleet.data)
    problem = problem or data.pop("problem", None)
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


async def session_health(state: ServerState) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/session-health``."""
    sections = await store_health.gather(state.health_checks or list(CORE_CHECKS), state)
    status, code = store_health.verdict(sections)
    body: dict[str, Any] = {"status": status}
    for section in sections:
        body[section.name] = section.data
    return code, body
