"""/healthz, /session-health and /metrics of the reference server against a real Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionstore import Heartbeat, RedisSettings, SessionStore, create_client, publish_heartbeat
from sessionstore.server import create_app
from sessionstore.testing import free_port
from tests.polling import eventually
from tests.server.test_api import SERVICE_AUTH, TOKEN, server_settings
from tests.serving import serving

#: These tests serve an app on the standalone Redis (`redis_url`); the store matches it.
pytestmark = pytest.mark.standalone

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def http(redis_url: str, key_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(server_settings(redis_url, key_prefix))) as (client, _):
        yield client


@pytest.fixture
async def dead_http(key_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    """A server whose Redis is not there (a port nobody listens on)."""
    settings = server_settings(f"redis://127.0.0.1:{free_port()}/0", key_prefix)
    async with serving(create_app(settings), headers=SERVICE_AUTH) as (client, _):
        yield client


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}x"}, 401),
        (AUTH, 200),
    ],
)
async def test_session_health_needs_the_bearer_token(
    http: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    """Only the configured bearer token is let in; others get 401 with WWW-Authenticate."""
    answer = await http.get("/session-health", headers=headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert "sessions" not in answer.json()


async def test_session_health_is_off_without_a_token(redis_url: str, key_prefix: str) -> None:
    """No SESSIONSTORE_HEALTH_TOKEN: the endpoint refuses everyone with 403."""
    settings = server_settings(redis_url, key_prefix)
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"health_token": None})}
    )
    async with serving(create_app(settings)) as (http, _):
        answer = await http.get("/session-health", headers=AUTH)
    assert answer.status_code == 403


async def test_session_health_counts_agree_with_the_store(
    http: httpx.AsyncClient, store: SessionStore
) -> None:
    """Counts come from the store: active, expired-awaiting-sweep and lifetime totals."""
    for _ in range(3):
        await store.create()
    overdue = await store.create(idle_timeout=timedelta(milliseconds=1))
    ended = await store.create()
    await store.delete(ended.id)
    body = (await http.get("/session-health", headers=AUTH)).json()
    counts = await store.counts()
    assert (await store.lookup(overdue.id)).status.value == "expired"
    assert body["redis"]["status"] == "connected" and body["redis"]["latency_ms"] > 0
    sessions = body["sessions"]
    assert sessions["active"] == counts.active == 3
    assert sessions["expired"] == counts.overdue == 1
    assert sessions["total"] == 4
    assert sessions["lifetime"]["created"] == 5 and sessions["lifetime"]["closed"] == 1
    assert sessions["sweeper_lag_seconds"] >= 0


async def test_sweeper_lag_makes_it_degraded(redis_url: str, key_prefix: str) -> None:
    """An overdue session older than the allowed lag turns the status to degraded (200)."""
    settings = server_settings(redis_url, key_prefix, health_max_sweeper_lag=timedelta(0))
    client = create_client(RedisSettings.from_dsn(redis_url))
    try:
        await SessionStore(client, settings.session).create(idle_timeout=timedelta(milliseconds=1))
    finally:
        await client.aclose()
    async with serving(create_app(settings)) as (http, _):
        answer = await http.get("/session-health", headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["status"] == "degraded"
    assert "sweeper" in answer.json()["sessions"]["problem"]


async def test_a_lag_of_a_few_sweep_periods_makes_it_degraded(
    redis_url: str, key_prefix: str
) -> None:
    """With sweeps every second, an overdue session left unswept for a few periods
    degrades health long before the 5-minute cap."""
    settings = server_settings(redis_url, key_prefix, sweep_interval=timedelta(seconds=1))
    client = create_client(RedisSettings.from_dsn(redis_url))
    try:
        await SessionStore(client, settings.session).create(idle_timeout=timedelta(milliseconds=1))
    finally:
        await client.aclose()
    async with serving(create_app(settings)) as (http, _):

        async def degraded() -> bool:
            answer = await http.get("/session-health", headers=AUTH)
            return bool(answer.json()["status"] == "degraded")

        await eventually(degraded, timeout=30, interval=0.2)
        body = (await http.get("/session-health", headers=AUTH)).json()
    assert "sweeper" in body["sessions"]["problem"]
    assert body["sessions"]["sweeper_lag_seconds"] < 60


async def beat(store: SessionStore, worker_id: str, **reports: dict[str, Any]) -> None:
    """Publish a heartbeat as a worker of the fleet would."""
    heartbeat = Heartbeat(worker_id=worker_id, host="box", pid=7, queue="q")
    heartbeat.reports.update(reports)
    await publish_heartbeat(store.redis, store.keys, heartbeat, ttl=timedelta(minutes=5))


async def silence(store: SessionStore, worker_id: str) -> None:
    """Move a worker's last beat two minutes back: it is dead by the default 30 s bound."""
    seconds, _ = await store.redis.time()
    await store.redis.hset(store.keys.worker(worker_id), "last_beat", (int(seconds) - 120) * 1000)


async def test_session_health_lists_workers_by_their_heartbeats(
    http: httpx.AsyncClient, store: SessionStore
) -> None:
    """Live and dead workers come from their heartbeats, with the newest sweep of any."""
    older = {"at": "2025-01-01T00:00:00+00:00", "expired": 1, "still_due": 0}
    newer = {"at": "2025-01-01T00:00:05+00:00", "expired": 4, "still_due": 0}
    await beat(store, "w-a", sweep=older)
    await beat(store, "w-b", sweep=newer)
    await beat(store, "w-gone")
    await silence(store, "w-gone")
    answer = await http.get("/session-health", headers=AUTH)
    workers = answer.json()["workers"]
    assert answer.status_code == 200 and answer.json()["status"] == "healthy"
    assert (workers["live"], workers["dead"], workers["stopped"]) == (2, 1, 0)
    assert sorted(workers["live_ids"]) == ["w-a", "w-b"] and workers["dead_ids"] == ["w-gone"]
    assert workers["last_sweep"] == {"worker": "w-b", **newer}
    assert "problem" not in workers


async def test_no_live_worker_is_fine_while_nothing_waits_long(
    http: httpx.AsyncClient, store: SessionStore
) -> None:
    """No worker at all, a dead one, but no session overdue past the allowed lag: healthy."""
    await store.create()
    await beat(store, "w-gone")
    await silence(store, "w-gone")
    body = (await http.get("/session-health", headers=AUTH)).json()
    assert body["status"] == "healthy"
    assert body["workers"]["live"] == 0 and body["workers"]["last_sweep"] is None


async def test_no_live_worker_while_sessions_wait_past_the_lag_is_degraded(
    redis_url: str, key_prefix: str, store: SessionStore
) -> None:
    """Overdue past the lag with no live worker: the workers section names the cause; once
    a worker is live only the sweeper-lag line of the sessions section remains."""
    settings = server_settings(redis_url, key_prefix, health_max_sweeper_lag=timedelta(0))
    await store.create(idle_timeout=timedelta(milliseconds=1))
    async with serving(create_app(settings)) as (http, _):
        alone = (await http.get("/session-health", headers=AUTH)).json()
        await beat(store, "w-back")
        staffed = (await http.get("/session-health", headers=AUTH)).json()
    assert alone["status"] == "degraded"
    assert "no live worker" in alone["workers"]["problem"]
    assert staffed["status"] == "degraded" and "problem" not in staffed["workers"]
    assert staffed["workers"]["live_ids"] == ["w-back"]
    assert "sweeper" in staffed["sessions"]["problem"]


async def test_redis_down_gives_503_but_liveness_stays_up(
    dead_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """/session-health is 503 when Redis is unreachable; /healthz still answers 200; the
    503s are logged by route, never with the session id from the path."""
    caplog.set_level(logging.WARNING, logger="sessionstore")
    session_id = "3.AAAAAAAAAAAAAAAAAAAAAAAA"
    read = await dead_http.get(f"/sessions/{session_id}")
    assert read.status_code == 503
    assert "/sessions/{session_id}" in caplog.text and session_id not in caplog.text
    health = await dead_http.get("/session-health", headers=AUTH)
    live = await dead_http.get("/healthz")
    api = await dead_http.post("/sessions", json={})
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["redis"]["status"] == "unreachable"
    assert "sessions" not in health.json(), "no waiting on sections that need Redis"
    assert live.status_code == 200
    assert api.status_code == 503 and api.headers["Retry-After"] == "1"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_report_fleet_figures_from_redis(
    http: httpx.AsyncClient, store: SessionStore
) -> None:
    """Session transitions made by anyone (here: another client) show in this replica's metrics."""
    for _ in range(2):
        await store.create()
    gone = await store.create()
    await store.expire(gone.id)
    samples = _samples((await http.get("/metrics")).text)
    transitions = "sessionstore_session_transitions_total"
    assert samples[(transitions, (("transition", "created"),))] == 3
    assert samples[(transitions, (("transition", "expired"),))] == 1
    assert samples[("sessionstore_sessions_active", ())] == 2
    assert samples[("sessionstore_redis_up", ())] == 1
    assert samples[("sessionstore_redis_latency_seconds_count", ())] >= 1


async def test_metrics_count_workers_by_state(http: httpx.AsyncClient, store: SessionStore) -> None:
    """Live, dead and stopped workers are fleet-wide gauges read from the heartbeats."""
    await beat(store, "w-1")
    await beat(store, "w-2")
    await beat(store, "w-3")
    await silence(store, "w-3")
    samples = _samples((await http.get("/metrics")).text)
    name = "sessionstore_workers"
    assert samples[(name, (("state", "live"),))] == 2
    assert samples[(name, (("state", "dead"),))] == 1
    assert samples[(name, (("state", "stopped"),))] == 0


async def test_metrics_count_requests_by_route_template(http: httpx.AsyncClient) -> None:
    """Requests are labelled by route template, not raw path, and by status."""
    made = (await http.post("/sessions", json={}, headers=SERVICE_AUTH)).json()
    await http.get(f"/sessions/{made['id']}", headers=SERVICE_AUTH)
    await http.get("/sessions/0.AAAAAAAAAAAAAAAAAAAAAAAA", headers=SERVICE_AUTH)
    samples = _samples((await http.get("/metrics")).text)
    name = "sessionstore_http_requests_total"
    route = ("route", "/sessions/{session_id}")
    assert samples[(name, (("method", "GET"), route, ("status", "200")))] == 1
    assert samples[(name, (("method", "GET"), route, ("status", "404")))] == 1
    assert not any(made["id"] in str(key) for key in samples)


async def test_metrics_say_redis_is_down(dead_http: httpx.AsyncClient) -> None:
    """With Redis unreachable /metrics still answers, with redis_up 0 and no stale figures."""
    answer = await dead_http.get("/metrics")
    samples = _samples(answer.text)
    assert answer.status_code == 200
    assert samples[("sessionstore_redis_up", ())] == 0
    assert ("sessionstore_sessions_active", ()) not in samples
