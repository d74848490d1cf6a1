"""Proof of the served fleet: a real Redis, three `sessionstore serve` processes and two
`sessionstore worker` processes, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from sessionstore import RedisSettings, SessionSettings, SessionStore, Tombstone, create_client
from sessionstore.upstream import SecretBox
from tests.bulk import all_events, expired_per_session
from tests.fleet.served import (
    ServedFleet,
    demo_call,
    guarded_calls,
    live_worker_ids,
    metric_sample,
    run_haproxy,
    seen_by,
)
from tests.polling import eventually
from tests.upstream.dovecot import Dovecot, dovecot_binary

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

TOKEN = "fleet-t0ken"
PREFIX = "fleet" + secrets.token_hex(3)
LEASE_SECONDS = 5
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HEADER = "Mcp-Session-Id"
WORKERS = {"worker-1", "worker-2"}
ADMIN = {"Authorization": "Bearer fleet-admin-t0ken"}
#: The backend's token: the tests create, list and read sessions as a service does.
SERVICE = {"Authorization": "Bearer fleet-service-t0ken"}
#: The replicas' breaker staleness bound (the default), and the deadline for the others to
#: see a change: the bound plus a stated 4 s of room for a loaded 2-core machine.
STALENESS_SECONDS = 1.0
BOUND = STALENESS_SECONDS + 4.0
TRIPPED_OPEN = {"breaker": "demo:tripped", "state": "open"}


@pytest.fixture(scope="module")
def fleet() -> Iterator[ServedFleet]:
    settings = {
        "SESSIONSTORE_KEY_PREFIX": PREFIX,
        "SESSIONSTORE_SHARDS": "4",
        "SESSIONSTORE_HEALTH_TOKEN": TOKEN,
        # Short leases so a killed replica's requests lapse within the test.
        "SESSIONSTORE_REQUEST_LEASE_TTL": str(LEASE_SECONDS),
        "SESSIONSTORE_MAX_REQUESTS_PER_SESSION": "1",
        "SESSIONSTORE_RENEW_EXPIRED_SESSIONS": "true",
        "SESSIONSTORE_DRAIN_TIMEOUT": "10",
        "SESSIONSTORE_REDIS_CONNECT_TIMEOUT": "0.5",
        "SESSIONSTORE_REDIS_SOCKET_TIMEOUT": "1",
        # Workers: sweep every second, beat twice a second, dead after 3 s of silence;
        # no repair run in the middle of a test.
        "SESSIONSTORE_QUEUE_REDIS_URL": "",
        "SESSIONSTORE_AGGRESSIVE_CLEANUP": "false",
        "SESSIONSTORE_SWEEP_INTERVAL": "1",
        "SESSIONSTORE_HEARTBEAT_INTERVAL": "0.5",
        "SESSIONSTORE_WORKER_DEAD_AFTER": "3",
        "SESSIONSTORE_REPAIR_INTERVAL": "86400",
        # Breakers: control with an admin token, the demo route's simulated upstream,
        # judged after 6 calls, open long enough to look at.
        "SESSIONSTORE_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "SESSIONSTORE_SERVICE_TOKENS": SERVICE["Authorization"].removeprefix("Bearer "),
        "SESSIONSTORE_DEMO_ROUTES": "true",
        "SESSIONSTORE_BREAKER_MINIMUM_CALLS": "6",
        "SESSIONSTORE_BREAKER_OPEN_DURATION": "300",
        "SESSIONSTORE_BREAKER_STALENESS_BOUND": str(STALENESS_SECONDS),
        # Upstreams: one Fernet key for replicas and workers, loopback only.
        "SESSIONSTORE_SECRET_KEY": SecretBox.generate_key(),
        "SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS": "127.0.0.1",
    }
    served = ServedFleet(3, settings, workers=2).start()
    yield served
    served.stop()


@pytest.fixture
async def store(fleet: ServedFleet) -> AsyncIterator[SessionStore]:
    """The store the replicas use, read directly to check what they did."""
    client = create_client(RedisSettings.from_dsn(fleet.redis.url))
    yield SessionStore(client, SessionSettings(key_prefix=PREFIX, shards=4))
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0, headers=SERVICE) as client:
        yield client


def urls(fleet: ServedFleet) -> list[str]:
    return [replica.url for replica in fleet.replicas]


async def create(http: httpx.AsyncClient, base: str, **body: Any) -> dict[str, Any]:
    answer = await http.post(f"{base}/sessions", json=body, headers=SERVICE)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


async def test_session_made_on_one_replica_is_used_on_the_others(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """Created on replica 1, written on replica 2, read on replica 3 (path and header)."""
    one, two, three = urls(fleet)
    made = await create(http, one, user_id="walker", state={"step": 1})
    wrote = await http.patch(
        f"{two}/sessions/{made['id']}/state",
        json={"values": {"step": 2}},
        headers={"If-Match": '"1"'},
    )
    assert wrote.status_code == 200
    read = await http.get(f"{three}/sessions/{made['id']}")
    current = await http.get(f"{three}/session", headers={HEADER: made["id"]})
    listed = await http.get(f"{one}/users/walker/sessions")
    assert read.json()["state"] == {"step": 2} and read.headers["ETag"] == '"2"'
    assert current.json()["id"] == made["id"]
    assert [s["id"] for s in listed.json()["sessions"]] == [made["id"]]


async def test_concurrent_updates_over_replicas_lose_nothing(
    fleet: ServedFleet, http: httpx.AsyncClient, store: SessionStore
) -> None:
    """6 clients x 15 increments, each a read then If-Match write, round-robin over the
    replicas: every increment lands exactly once."""
    bases = urls(fleet)
    made = await create(http, bases[0], state={"counter": 0})
    url = f"/sessions/{made['id']}"
    conflicts = 0

    async def increment(client_no: int, times: int) -> None:
        nonlocal conflicts
        for n in range(times):
            while True:
                base = bases[(client_no + n) % len(bases)]
                read = await http.get(f"{base}{url}")
                counter = read.json()["state"]["counter"]
                wrote = await http.patch(
                    f"{base}{url}/state",
                    json={"values": {"counter": counter + 1}},
                    headers={"If-Match": read.headers["ETag"]},
                )
                if wrote.status_code == 200:
                    break
                assert wrote.status_code == 412, wrote.text
                conflicts += 1

    await asyncio.gather(*(increment(c, 15) for c in range(6)))
    final = await store.get(made["id"])
    assert final.state["counter"] == 90
    assert final.version == 91, "each increment was exactly one committed write"
    assert conflicts > 0, "the clients did collide, and the 412s sorted it out"


async def test_client_resumes_on_another_replica_after_disconnect(
    fleet: ServedFleet, store: SessionStore
) -> None:
    """A client drops its connection to replica 1 and carries on with replica 2; after
    the session expires, replica 3 renews it, and every replica then refuses to hand
    the successor out again for the old id (it went to the first renewal, once)."""
    one, two, three = urls(fleet)
    async with httpx.AsyncClient() as first:
        made = await create(first, one, user_id="roamer", state={"draft": "hello"})
    async with httpx.AsyncClient() as second:
        own = {HEADER: made["id"]}  # the client's own session: its id in the header
        resumed = (await second.post(f"{two}/sessions/{made['id']}/resume", headers=own)).json()
        assert resumed["id"] == made["id"] and resumed["state"] == {"draft": "hello"}
        await store.expire(made["id"])
        renewed = await second.get(f"{three}/session", headers={HEADER: made["id"]})
        successor = renewed.headers[HEADER]
        again = await second.post(f"{one}/sessions/{made['id']}/resume", headers=own)
        kept = await second.get(f"{two}/sessions/{successor}", headers={HEADER: successor})
    assert renewed.status_code == 200 and successor != made["id"]
    assert renewed.headers["Sessionstore-Renewed-From"] == made["id"]
    assert again.status_code == 410 and again.json()["error"] == "session_expired"
    assert successor not in again.text
    assert kept.json()["resumed_from"] == made["id"] and kept.json()["user_id"] == "roamer"


async def test_killed_replica_leases_are_reclaimed(
    fleet: ServedFleet, http: httpx.AsyncClient, store: SessionStore
) -> None:
    """A request held on a replica counts against the per-session limit everywhere;
    after SIGKILL its lease lapses (lease TTL) and the limit frees up."""
    victim, other = fleet.replicas[0], fleet.replicas[1]
    made = await create(http, other.url)
    held = asyncio.create_task(
        http.get(
            f"{victim.url}/session/wait",
            params={"after_version": 1, "timeout": 60},
            headers={HEADER: made["id"]},
        )
    )

    async def lease_taken() -> bool:
        return (await store.get(made["id"])).active_requests == 1

    try:
        await eventually(lease_taken, timeout=30)
        refused = await http.get(f"{other.url}/session", headers={HEADER: made["id"]})
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        victim.kill()
        with pytest.raises(httpx.TransportError):
            await held

        async def served_again() -> bool:
            answer = await http.get(f"{other.url}/session", headers={HEADER: made["id"]})
            return answer.status_code == 200

        # The lease lapses within one lease TTL of the last renewal.
        await eventually(served_again, timeout=LEASE_SECONDS * 6, interval=0.1)
    finally:
        held.cancel()
        fleet.restart(victim)


async def test_graceful_stop_returns_leases(
    fleet: ServedFleet, http: httpx.AsyncClient, store: SessionStore
) -> None:
    """SIGTERM on a replica with a request in flight: the request finishes, the replica
    exits 0, and its lease is returned at once rather than left to lapse."""
    replica = fleet.replicas[2]
    made = await create(http, fleet.replicas[0].url)
    held = asyncio.create_task(
        http.get(
            f"{replica.url}/session/wait",
            params={"after_version": 1, "timeout": 1},
            headers={HEADER: made["id"]},
        )
    )

    async def lease_taken() -> bool:
        return (await store.get(made["id"])).active_requests == 1

    try:
        await eventually(lease_taken, timeout=30)
        code = await asyncio.to_thread(replica.terminate)
        answer = await held
        leases_at_exit = (await store.get(made["id"])).active_requests
    finally:
        held.cancel()
        fleet.restart(replica)
    # uvicorn re-raises the signal after its graceful shutdown: exit by SIGTERM, or 0.
    assert code in (0, -signal.SIGTERM) and answer.status_code == 200
    # Renewed every TTL/3, an unreturned lease would still count for seconds.
    assert leases_at_exit == 0


async def test_workers_expire_sessions_made_through_the_replicas_once_each(
    fleet: ServedFleet, http: httpx.AsyncClient, store: SessionStore
) -> None:
    """Sessions created through the three replicas with a short idle timeout are expired
    by the two workers, each exactly once (expired events de-duplicated by id), the
    others are left alone, and afterwards every replica's /session-health and /metrics
    agree with the store: nothing overdue, both workers live."""
    bases = urls(fleet)
    brief = await asyncio.gather(
        *(create(http, bases[n % 3], user_id="brief", idle_timeout_seconds=0.5) for n in range(60))
    )
    kept = [await create(http, base, user_id="kept") for base in bases]
    brief_ids = [made["id"] for made in brief]

    async def all_swept() -> bool:
        found = await asyncio.gather(*(store.lookup(i) for i in brief_ids))
        return all(isinstance(f, Tombstone) and f.reason == "idle" for f in found)

    await eventually(all_swept, timeout=60, interval=0.2)
    expired = expired_per_session(await all_events(store.redis, store))
    assert {i: expired[i] for i in brief_ids} == dict.fromkeys(brief_ids, 1)
    for made in kept:
        assert (await http.get(f"{bases[0]}/sessions/{made['id']}")).status_code == 200
        assert expired[made["id"]] == 0

    counts = await store.counts()
    for base in bases:
        answer = await http.get(f"{base}/session-health", headers=AUTH)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "healthy", body
        assert body["sessions"]["active"] == counts.active
        assert body["sessions"]["expired"] == counts.overdue == 0
        assert body["sessions"]["lifetime"] == counts.totals
        assert set(body["workers"]["live_ids"]) == WORKERS and body["workers"]["dead"] == 0
        assert body["workers"]["last_sweep"]["worker"] in WORKERS
        metrics = (await http.get(f"{base}/metrics")).text
        assert metric_sample(metrics, "sessionstore_workers", state="live") == 2
        assert metric_sample(metrics, "sessionstore_sessions_active") == counts.active
        expired_total = counts.totals["expired"]
        assert metric_sample(
            metrics, "sessionstore_session_transitions_total", transition="expired"
        ) == (expired_total)


async def test_breaker_isolated_through_one_replica_is_seen_by_the_others(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """B and C guard calls to an upstream; A isolates its breaker (admin token, who, why):
    within the bound B's and C's own views are forced_open and they refuse calls; a reset
    through C lets B call again."""
    a, b, c = urls(fleet)
    await guarded_calls(http, [b, c], "isolated", expect=200)
    why = {"actor": "fleet-test", "reason": "isolation drill"}
    opened = await http.post(f"{a}/breakers/demo:isolated/force-open", json=why, headers=ADMIN)
    assert opened.status_code == 200 and opened.json()["state"] == "forced_open"
    await seen_by(http, BOUND, [b, c], "demo:isolated", "forced_open")
    await guarded_calls(http, [b, c], "isolated", expect=503)
    audit = (await http.get(f"{b}/breakers/demo:isolated")).json()["audit"][0]
    assert (audit["action"], audit["actor"]) == ("force_open", "fleet-test")
    reset = await http.post(f"{c}/breakers/demo:isolated/reset", json=why, headers=ADMIN)
    assert reset.status_code == 200
    await seen_by(http, BOUND, [b], "demo:isolated", "closed")
    await guarded_calls(http, [b], "isolated", expect=200)


async def test_breaker_tripped_by_failures_through_one_replica_is_seen_by_the_others(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """Failed calls through A (each a 502, recorded in the fleet-wide window) trip the
    breaker there; B and C, which guard calls to the same upstream, report it open within
    the bound and refuse calls; their /metrics show it open, read from Redis."""
    a, b, c = urls(fleet)
    await guarded_calls(http, [b, c], "tripped", expect=200)
    failed = 0
    while (answer := await demo_call(http, a, "tripped", "failure")).status_code == 502:
        failed += 1
        assert failed < 50, "the breaker never opened"
    assert answer.json()["error"] == "breaker_open" and failed >= 4  # 6 calls, half failed
    await seen_by(http, BOUND, [b, c], "demo:tripped", "open")
    await guarded_calls(http, [b, c], "tripped", expect=503)
    for base in (b, c):
        text = (await http.get(f"{base}/metrics")).text
        assert metric_sample(text, "sessionstore_breaker_state", **TRIPPED_OPEN) == 1
    breaker = (await http.get(f"{c}/breakers/demo:tripped")).json()["breaker"]
    assert (breaker["cause"], breaker["trips"]) == ("failure_rate", 1)


@pytest.fixture
def imap_server() -> Iterator[Dovecot]:
    """A private Dovecot with one user, for the fleet's upstream test."""
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    server = Dovecot({"fleetuser": "fleet-pa55"})
    server.start()
    yield server
    server.remove()


@pytest.mark.imap
async def test_an_upstream_registered_through_one_replica_reads_healthy_through_the_others(
    fleet: ServedFleet, http: httpx.AsyncClient, imap_server: Dovecot
) -> None:
    """The session's client registers its IMAP account through A (verified, encrypted);
    B probes it live from its own pool (healthy, with a response time, B's socket) and C,
    which never touched it, reads the same health from the record in Redis."""
    a, b, c = urls(fleet)
    made = await create(http, a)
    mine = {HEADER: made["id"]}
    where = f"/sessions/{made['id']}/upstreams/mail"
    account = {"host": "127.0.0.1", "port": imap_server.port, "tls": False,
               "username": "fleetuser", "secret": "fleet-pa55"}  # fmt: skip
    put = await http.put(f"{a}{where}?verify=true", json=account, headers=mine)
    assert put.status_code == 200, put.text
    assert (put.json()["state"], put.json()["credential"]["kind"]) == ("connected", "encrypted")
    live = (await http.get(f"{b}{where}/health?probe=true", headers=mine)).json()
    assert live["healthy"] is True and live["source"] == "probe" and live["response_time_ms"] > 0
    recorded = (await http.get(f"{c}{where}/health", headers=mine)).json()
    assert recorded["healthy"] is True and recorded["source"] == "record"
    assert recorded["response_time_ms"] == round(live["response_time_ms"], 3)
    sockets = [
        metric_sample((await http.get(f"{base}/metrics")).text,
                      "sessionstore_upstream_pool_sockets_open")
        for base in (a, b, c)
    ]  # fmt: skip
    assert sockets == [0, 1, 0]
    assert (await http.delete(f"{c}{where}", headers=mine)).status_code == 204
    gone = await http.get(f"{b}{where}/health", headers=mine)
    assert gone.status_code == 404, gone.text


async def test_redis_down_gives_fast_503s_and_the_fleet_recovers(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """With Redis stopped every replica answers 503 with Retry-After within a generous
    deadline (liveness stays 200) and the workers keep running; when Redis returns on its
    port, every replica serves again by itself, sessions made before the outage are still
    there (AOF), and both workers are live again and sweep."""
    before = await create(http, fleet.replicas[0].url, state={"kept": True})
    fleet.redis.stop(remove=False)
    try:
        for base in urls(fleet):
            started = time.monotonic()
            answer = await http.post(f"{base}/sessions", json={})
            elapsed = time.monotonic() - started
            assert answer.status_code == 503 and answer.headers["Retry-After"]
            assert answer.json()["error"] == "backend_unavailable"
            assert elapsed < 3.0, f"{base} took {elapsed:.2f}s to refuse"
            assert (await http.get(f"{base}/healthz")).status_code == 200
            health = await http.get(f"{base}/session-health", headers=AUTH)
            assert health.status_code == 503

        async def workers_wait() -> bool:
            assert all(worker.alive() for worker in fleet.workers), "workers wait, not exit"
            return all("lost Redis" in worker.log() for worker in fleet.workers)

        await eventually(workers_wait, timeout=30, interval=0.1)
    finally:
        fleet.redis.start()
    for base in urls(fleet):

        async def serving(base: str = base) -> bool:
            answer = await http.get(f"{base}/sessions/{before['id']}")
            return answer.status_code == 200 and answer.json()["state"] == {"kept": True}

        await eventually(serving, timeout=30, interval=0.1)

    async def workers_back() -> bool:
        back = all("Redis is back" in worker.log() for worker in fleet.workers)
        return back and await live_worker_ids(fleet.redis.url, fleet.settings) == WORKERS

    await eventually(workers_back, timeout=60, interval=0.2)
    brief = await create(http, fleet.replicas[1].url, idle_timeout_seconds=0.2)
    client = create_client(RedisSettings.from_dsn(fleet.redis.url))  # one from after the restart
    try:
        store = SessionStore(client, SessionSettings(key_prefix=PREFIX, shards=4))

        async def swept() -> bool:
            found = await store.lookup(brief["id"])
            return isinstance(found, Tombstone) and found.reason == "idle"

        await eventually(swept, timeout=60, interval=0.2)
    finally:
        await client.aclose()


@pytest.fixture
def balancer(fleet: ServedFleet) -> Iterator[str]:
    """HAProxy with the deploy config in front of the three replicas; yields its URL."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(binary, os.X_OK):
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    with run_haproxy(binary, fleet) as url:
        yield url


async def test_load_balancer_spreads_requests_and_routes_around_a_dead_replica(
    fleet: ServedFleet, balancer: str, http: httpx.AsyncClient
) -> None:
    """Through deploy/haproxy.cfg: requests reach every replica, any replica serves any
    session, and with one replica SIGKILLed every request still succeeds (retried on
    another replica)."""
    pids = {(await http.get(f"{balancer}/healthz")).json()["pid"] for _ in range(9)}
    assert len(pids) == 3
    made = await create(http, balancer, state={"via": "lb"})
    victim = fleet.replicas[1]
    victim.kill()
    try:
        answers = [await http.get(f"{balancer}/sessions/{made['id']}") for _ in range(12)]
    finally:
        fleet.restart(victim)
    assert [a.status_code for a in answers] == [200] * 12
    assert all(a.json()["state"] == {"via": "lb"} for a in answers)
