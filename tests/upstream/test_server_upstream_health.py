"""Upstreams in the reference server's /metrics and /session-health, and its lifespan when
the queue's Redis, the store's Redis, or a queue at all is missing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sessionstore import (
    RedisSettings,
    SessionSettings,
    SessionStore,
    SessionStoreError,
    create_client,
)
from sessionstore.testing import free_port
from sessionstore.upstream import StoredCredential, UpstreamRecords, UpstreamSpec, UpstreamState
from tests.upstream.conftest import PASSWORD
from tests.upstream.dovecot import Dovecot
from tests.upstream.replicas import (
    ADMIN_AUTH,
    HEALTH_AUTH,
    Replica,
    body,
    owner,
    replica_settings,
    running,
    samples,
    url,
)


@pytest.mark.standalone
@pytest.mark.imap
async def test_metrics_count_reconnects_fleet_wide_and_sockets_per_process(
    replica: Replica, dovecot: Dovecot, store: SessionStore
) -> None:
    """Record writes made anywhere (here: another process's `UpstreamRecords`, as a worker's
    reconnect job writes them) show as fleet-wide counters; this replica's own socket shows
    in the per-process gauges."""
    worker_side = UpstreamRecords(store)
    elsewhere = await store.create()
    spec = UpstreamSpec(name="mail", host="127.0.0.1", port=993, username="a")
    await worker_side.register(elsewhere.id, spec, StoredCredential(ref="env:X"))
    for _ in range(2):  # an operation gave up, then a reconnect attempt failed
        await worker_side.update(
            elsewhere.id, "mail", state=UpstreamState.RECONNECTING, error="timeout", attempts="incr"
        )
    await worker_side.update(elsewhere.id, "mail", state=UpstreamState.CONNECTED, success=True)
    mine = await store.create()
    await replica.http.put(
        url(mine.id), json=body(dovecot, secret=PASSWORD), headers=owner(mine.id)
    )
    await replica.http.get(url(mine.id, tail="/health?probe=true"), headers=owner(mine.id))
    seen = samples((await replica.http.get("/metrics")).text)
    attempts = "sessionstore_upstream_reconnect_attempts_total"
    assert seen[(attempts, (("result", "failed"),))] == 2
    assert seen[(attempts, (("result", "succeeded"),))] == 1
    transitions = "sessionstore_upstream_transitions_total"
    assert seen[(transitions, (("to", "reconnecting"),))] == 1
    assert seen[(transitions, (("to", "connected"),))] == 2  # the reconnect and the probe
    assert seen[("sessionstore_upstream_registrations_total", (("change", "registered"),))] == 2
    assert seen[("sessionstore_upstream_pool_sockets_open", ())] == 1
    tracked = "sessionstore_upstream_pool_connections"
    assert seen[(tracked, (("state", "connected"),))] == 1
    assert seen[(tracked, (("state", "reconnecting"),))] == 0


@pytest.mark.standalone
async def test_session_health_has_a_bounded_upstreams_section(replica: Replica) -> None:
    """The section names the queue the reconnect jobs go to (reachable, with its PING),
    this replica's sockets and the fleet counters, and lists no connection."""
    answer = await replica.http.get("/session-health", headers=HEALTH_AUTH)
    section = answer.json()["upstreams"]
    assert answer.status_code == 200
    assert section["reconnect_jobs"]["enabled"] is True
    assert section["reconnect_jobs"]["queue_reachable"] is True
    assert section["reconnect_jobs"]["queue"].endswith(":queue")
    assert section["replica"]["open_sockets"] == 0
    assert section["fleet"]["reconnect_attempts"] == {"failed": 0, "succeeded": 0}
    assert "problem" not in section


@pytest.mark.standalone
@pytest.mark.imap
async def test_a_queue_that_is_down_degrades_health_but_not_the_routes(
    store: SessionStore, redis_url: str, secret_key: str, dovecot: Dovecot
) -> None:
    """The job queue on a Redis nobody runs: the replica starts, /session-health is 200
    "degraded" naming the queue, and registering and probing still work."""
    dead_queue = f"redis://127.0.0.1:{free_port()}/0"
    settings = replica_settings(
        store, redis_url, secret_key, queue_redis_url=dead_queue,
        redis_connect_timeout=timedelta(milliseconds=300),
    )  # fmt: skip
    session = await store.create()
    async with running(settings) as served:
        health = await served.http.get("/session-health", headers=HEALTH_AUTH)
        put = await served.http.put(
            url(session.id), json=body(dovecot, secret=PASSWORD), headers=owner(session.id)
        )
        probe = await served.http.get(
            url(session.id, tail="/health?probe=true"), headers=owner(session.id)
        )
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    section = health.json()["upstreams"]
    assert section["reconnect_jobs"]["queue_reachable"] is False
    assert "reconnect-job queue is unreachable" in section["problem"]
    assert put.status_code == 200 and probe.json()["healthy"] is True


async def test_a_cluster_store_without_a_queue_url_runs_without_reconnect_jobs(
    cluster_url: str, key_prefix: str, secret_key: str
) -> None:
    """Store on Redis Cluster and no SESSIONSTORE_QUEUE_REDIS_URL (arq cannot use a
    cluster): the replica starts with reconnect jobs off, says why in health, and stays
    healthy; its routes work on the cluster."""
    client = create_client(RedisSettings.from_dsn(cluster_url))
    store = SessionStore(client, SessionSettings(key_prefix=key_prefix, shards=4))
    try:
        settings = replica_settings(store, cluster_url, secret_key)
        session = await store.create()
        async with running(settings) as served:
            health = await served.http.get("/session-health", headers=HEALTH_AUTH)
            listed = await served.http.get(f"/sessions/{session.id}/upstreams", headers=ADMIN_AUTH)
    finally:
        await client.aclose()
    jobs = health.json()["upstreams"]["reconnect_jobs"]
    assert jobs["enabled"] is False and "SESSIONSTORE_QUEUE_REDIS_URL" in jobs["why_off"]
    assert "problem" not in health.json()["upstreams"]
    assert listed.status_code == 200 and listed.json() == {"upstreams": []}


@pytest.mark.standalone
async def test_redis_down_gives_fast_503s_on_the_upstream_routes(
    store: SessionStore, redis_url: str, secret_key: str
) -> None:
    """With the store's (and queue's) Redis unreachable at start-up the replica still
    starts; upstream routes answer 503 backend_unavailable with Retry-After."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = replica_settings(store, redis_url, secret_key)
    settings = settings.model_copy(update={"redis_url": dead})
    session_id = "1." + "A" * 24
    sent: dict[str, Any] = {"host": "127.0.0.1", "port": 143, "username": "u", "secret": "x"}
    async with running(settings) as served:
        put = await served.http.put(url(session_id), json=sent, headers=ADMIN_AUTH)
        health = await served.http.get(url(session_id, tail="/health"), headers=ADMIN_AUTH)
        metrics = await served.http.get("/metrics")
    assert (put.status_code, health.status_code) == (503, 503)
    assert put.json()["error"] == "backend_unavailable" and put.headers["Retry-After"] == "1"
    assert metrics.status_code == 200
    assert ("sessionstore_upstream_pool_sockets_open", ()) in samples(metrics.text)


@pytest.mark.standalone
@pytest.mark.imap
async def test_stopping_the_replica_closes_its_upstream_sockets_and_pool(
    store: SessionStore, redis_url: str, secret_key: str, dovecot: Dovecot
) -> None:
    """The lifespan's shutdown closes the pool: its IMAP socket is closed and the pool
    refuses further use; the record stays as it was (the session lives on)."""
    session = await store.create()
    settings = replica_settings(store, redis_url, secret_key)
    async with running(settings) as served:
        headers = owner(session.id)
        await served.http.put(url(session.id), json=body(dovecot, secret=PASSWORD), headers=headers)
        await served.http.get(url(session.id, tail="/health?probe=true"), headers=headers)
        pool = served.state.upstreams.pool
        connection = pool.entry(session.id, "mail").connection
        assert connection is not None and connection.alive
    assert not connection.alive and pool.open_connections() == []
    with pytest.raises(SessionStoreError, match="closed"):
        pool.require_open()
    record = await UpstreamRecords(store).get(session.id, "mail")
    assert record is not None and record.state is UpstreamState.CONNECTED
