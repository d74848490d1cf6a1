"""``/healthz`` (liveness), ``/session-health`` (authenticated readiness) and ``/metrics``."""

from __future__ import annotations

import os
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from ..._heartbeat import list_workers
from ..._redis import backend_errors
from ...exceptions import BackendUnavailable
from .._health import check_token, ping, session_health
from .._state import ServerState, State

router = APIRouter(tags=["health"])
_bearer = HTTPBearer(auto_error=False, description="SESSIONSTORE_HEALTH_TOKEN")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, Any]:
    """The process is up and serving. Does not touch Redis (that is ``/session-health``)."""
    return {"status": "ok", "pid": os.getpid()}


@router.get(
    "/session-health",
    summary="Session store health (bearer token)",
    responses={
        401: {"description": "Missing or wrong bearer token"},
        403: {"description": "No health token configured"},
        503: {"description": "Unhealthy: Redis is unreachable"},
    },
)
async def health(state: State, credentials: Credentials) -> JSONResponse:
    """Status, Redis connectivity and latency, session counts, sweeper lag, live workers.

    Answers 503 when Redis is unreachable, "degraded" (200) when a
    non-critical section (e.g. sweeper lag, no live worker) is off.
    """
    check_token(state.settings.health_token, credentials)
    code, body = await session_health(state)
    return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})


async def _refresh_fleet(state: ServerState) -> None:
    fleet = state.metrics.fleet
    try:
        await ping(state)
        counts = await state.store.counts()
        workers = await list_workers(
            state.redis, state.store.keys, dead_after=state.settings.worker_dead_after
        )
        if state.store.settings.max_requests_global > 0:
            now_ms = int(counts.at.timestamp() * 1000)
            with backend_errors("global lease count"):
                key = state.store.keys.global_requests()
                fleet.global_leases = int(await state.redis.zcount(key, f"({now_ms}", "+inf"))
    except BackendUnavailable:
        fleet.redis_up = False
        return
    fleet.counts = counts
    fleet.workers = Counter(worker.state for worker in workers)
    fleet.redis_up = True


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(state: State) -> PlainTextResponse:
    """Per-replica metrics plus fleet-wide session figures read from Redis at scrape time."""
    await _refresh_fleet(state)
    return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
