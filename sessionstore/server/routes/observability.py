"""``/healthz`` (liveness), ``/session-health`` (authenticated readiness) and ``/metrics``."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ..._redis import backend_errors
from ..._time import datetime_to_ms
from ...exceptions import BackendUnavailable
from ...fleet import list_workers
from ...upstream import read_upstream_totals
from .._auth import Credentials
from .._health import check_token, ping, session_health
from .._state import ServerState, State

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz(state: State) -> dict[str, Any]:
    """The process is up and serving. Does not touch Redis (that is ``/session-health``):
    the breakers' part is what this replica's registry already knows, without I/O."""
    breakers = state.breakers.health()
    return {
        "status": "ok",
        "pid": os.getpid(),
        "breakers": {
            "redis_reachable": breakers.redis_reachable,
            "redis_down_policy": breakers.policy,
            "push_live": breakers.push_live,
        },
    }


@router.get(
    "/session-health",
    summary="Session store health (bearer token)",
    responses={
        401: {"description": "Missing or wrong bearer token"},
        403: {"description": "No health token configured"},
        503: {
            "description": "Unhealthy: Redis is unreachable",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    },
)
async def health(state: State, credentials: Credentials) -> JSONResponse:
    """Status, Redis connectivity and latency, session counts, sweeper lag, live workers,
    breakers.

    Answers 503 when Redis is unreachable, "degraded" (200) when a
    non-critical section (e.g. sweeper lag, no live worker) is off.
    """
    check_token(state.access, credentials)
    code, body = await session_health(state)
    headers = {"Cache-Control": "no-store"}
    if code == 503:
        headers["Retry-After"] = "1"  # as every other 503: Redis is checked again at once
    return JSONResponse(body, status_code=code, headers=headers)


async def _refresh_fleet(state: ServerState) -> None:
    fleet = state.metrics.fleet
    try:
        await ping(state)
        counts = await state.store.counts()
        workers = await list_workers(
            state.redis, state.store.keys, dead_after=state.settings.worker.worker_dead_after
        )
        breakers = await state.breakers.admin.statuses()
        upstream_totals = await read_upstream_totals(state.store)
        if state.store.settings.max_requests_global > 0:
            now_ms = datetime_to_ms(counts.at)
            with backend_errors("global lease count"):
                key = state.store.keys.global_requests()
                fleet.global_leases = int(await state.redis.zcount(key, f"({now_ms}", "+inf"))
    except BackendUnavailable:
        fleet.redis_up = False
        state.metrics.breakers.statuses = None
        state.metrics.upstreams.totals = None
        return
    fleet.counts = counts
    state.metrics.breakers.statuses = breakers
    state.metrics.upstreams.totals = upstream_totals
    fleet.workers = Counter(worker.state for worker in workers)
    fleet.redis_up = True


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(state: State) -> PlainTextResponse:
    """Per-replica metrics plus fleet-wide session, breaker and upstream figures read from
    Redis at scrape time."""
    state.metrics.breakers.health = state.breakers.health()
    state.metrics.upstreams.census = state.upstreams.pool.census()
    await _refresh_fleet(state)
    return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
