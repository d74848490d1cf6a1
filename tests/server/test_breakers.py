"""The reference server's breaker endpoints, health and metrics, in-process against a real
Redis: reads, manual control with the admin token, the demo route that trips a breaker by
real recorded failures, and a second app (another replica) seeing the change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from sessionstore import RedisSettings, Settings, create_client
from sessionstore.breaker import BreakerAdmin, BreakerRegistry
from sessionstore.cli.serve import served_app
from sessionstore.server import create_app
from sessionstore.testing import free_port
from tests.conftest import RoundTrips
from tests.polling import eventually
from tests.serving import Lifespan, serving

HEALTH = "health-t0ken"
ADMIN = "admin-t0ken"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
HEALTH_AUTH = {"Authorization": f"Bearer {HEALTH}"}
NAME = "imap:imap.example.com:993"
WHY = {"actor": "alice", "reason": "provider incident #42"}


def settings_for(redis_url: str, key_prefix: str, **extra: Any) -> Settings:
    """A replica with both tokens, the demo route, and a breaker that judges after 4 calls,
    records each outcome inline and stays open long enough to look at."""
    fields: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "shards": 4,
        "health_token": SecretStr(HEALTH),
        "admin_token": SecretStr(ADMIN),
        "service_tokens": SecretStr("breaker-service-t0ken"),
        "demo_routes": True,
        "breaker_minimum_calls": 4,
        "breaker_record_flush_interval": timedelta(0),
        "breaker_open_duration": timedelta(minutes=5),
        "breaker_staleness_bound": timedelta(milliseconds=400),
        **extra,
    }
    return Settings(**fields)


@pytest.fixture
async def replica(
    redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Lifespan]]:
    async with serving(served_app(settings_for(redis_url, key_prefix))) as served:
        yield served


@pytest.fixture
async def http(replica: tuple[httpx.AsyncClient, Lifespan]) -> httpx.AsyncClient:
    return replica[0]


@pytest.fixture
async def admin(redis_url: str, key_prefix: str) -> AsyncIterator[BreakerAdmin]:
    """Reads Redis directly, to check what the server did."""
    client = create_client(RedisSettings.from_dsn(redis_url))
    yield BreakerAdmin(client, key_prefix=key_prefix)
    await client.aclose()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def call(http: httpx.AsyncClient, upstream: str, outcome: str) -> httpx.Response:
    return await http.post(f"/demo/upstreams/{upstream}/call", json={"outcome": outcome})


async def test_force_open_is_recorded_and_listed(
    http: httpx.AsyncClient, admin: BreakerAdmin
) -> None:
    """Force open with the admin token: the answer, Redis, the list and the detail agree,
    and the audit names who and why."""
    opened = await http.post(f"/breakers/{NAME}/force-open", json=WHY, headers=ADMIN_AUTH)
    assert opened.status_code == 200, opened.text
    assert opened.json()["state"] == "forced_open" and opened.json()["actor"] == "alice"
    assert (await admin.status(NAME)).state == "forced_open"
    listed = (await http.get("/breakers")).json()
    assert [(b["name"], b["state"]) for b in listed["breakers"]] == [(NAME, "forced_open")]
    assert listed["staleness_bound_seconds"] == 0.4 and listed["known"] == 1
    detail = (await http.get(f"/breakers/{NAME}", params={"events": 5})).json()
    assert detail["breaker"]["generation"] == opened.json()["generation"] == 1
    assert detail["breaker"]["window"] == {
        "calls": 0,
        "failures": 0,
        "slow": 0,
        "failure_rate": None,
        "slow_rate": None,
    }
    assert detail["local"] is None, "this replica never guarded a call to it"
    [entry] = detail["audit"]
    assert (entry["action"], entry["actor"], entry["reason"]) == (
        "force_open",
        "alice",
        "provider incident #42",
    )
    assert (entry["from_state"], entry["to_state"]) == ("closed", "forced_open")
    assert detail["events"][0]["fields"]["to"] == "forced_open"


async def test_force_closed_then_reset(http: httpx.AsyncClient, admin: BreakerAdmin) -> None:
    """Force closed needs a reason, reset does not; the audit keeps both, newest first."""
    closed = await http.post(f"/breakers/{NAME}/force-closed", json=WHY, headers=ADMIN_AUTH)
    reset = await http.post(f"/breakers/{NAME}/reset", json={"actor": "bob"}, headers=ADMIN_AUTH)
    assert closed.json()["state"] == "forced_closed" and reset.json()["state"] == "closed"
    audit = await admin.audit(NAME)
    assert [(a.action, a.actor) for a in audit] == [("reset", "bob"), ("force_closed", "alice")]
    assert reset.json()["cause"] == "reset" and reset.json()["generation"] == 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        (HEALTH_AUTH, 401),  # the health token reads health, it does not steer breakers
        ({"Authorization": f"Basic {ADMIN}"}, 401),
    ],
)
async def test_control_needs_the_admin_token(
    http: httpx.AsyncClient, admin: BreakerAdmin, headers: dict[str, str], status: int
) -> None:
    """Without the admin token every control call is refused (even with a bad body) and
    nothing reaches Redis."""
    for action, body in [("force-open", WHY), ("force-closed", WHY), ("reset", {"junk": 1})]:
        answer = await http.post(f"/breakers/{NAME}/{action}", json=body, headers=headers)
        assert answer.status_code == status, (action, answer.text)
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert not (await admin.status(NAME)).known


async def test_control_is_off_without_an_admin_token(
    redis_url: str, key_prefix: str, admin: BreakerAdmin
) -> None:
    """No SESSIONSTORE_ADMIN_TOKEN (the default): control answers 403 to everyone."""
    settings = settings_for(redis_url, key_prefix, admin_token=None)
    async with serving(served_app(settings)) as (http, _):
        answer = await http.post(f"/breakers/{NAME}/force-open", json=WHY, headers=ADMIN_AUTH)
    assert answer.status_code == 403 and "SESSIONSTORE_ADMIN_TOKEN" in answer.text
    assert not (await admin.status(NAME)).known


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/breakers/{NAME}/force-open", {"actor": "alice"}),  # no reason
        (f"/breakers/{NAME}/force-open", {"actor": "alice", "reason": "   "}),  # blank
        (f"/breakers/{NAME}/force-open", {**WHY, "extra": True}),  # unknown field
        (f"/breakers/{NAME}/force-closed", {"actor": "", "reason": "x"}),
        (f"/breakers/{NAME}/reset", {"actor": "eve\nINFO forged log line"}),
        (f"/breakers/{NAME}/reset", {"actor": "a" * 129}),
        (f"/breakers/{NAME}/reset", {"actor": "bob", "reason": "r" * 501}),
        ("/breakers/bad name!/force-open", WHY),
        (f"/breakers/{'n' * 257}/force-open", WHY),
    ],
)
async def test_bad_control_input_is_a_422_and_changes_nothing(
    http: httpx.AsyncClient, admin: BreakerAdmin, path: str, body: dict[str, Any]
) -> None:
    """Missing or blank reason, unknown fields, bad actors, oversized text and bad names are
    refused with 422 before anything reaches Redis."""
    answer = await http.post(path, json=body, headers=ADMIN_AUTH)
    assert answer.status_code == 422, answer.text
    assert await admin.names() == []


async def test_reading_an_unknown_or_malformed_breaker(http: httpx.AsyncClient) -> None:
    """An unknown name is a 404 with a code; a malformed one a 422; the list starts empty."""
    unknown = await http.get("/breakers/imap:nobody.example:993")
    assert unknown.status_code == 404 and unknown.json()["error"] == "breaker_not_found"
    assert (await http.get("/breakers/a b")).status_code == 422
    assert (await http.get("/breakers")).json()["breakers"] == []


async def test_list_is_sorted_and_limited_and_names_may_hold_slashes(
    http: httpx.AsyncClient, admin: BreakerAdmin
) -> None:
    """The list is by name, cut at `limit` with the full count in `known`; a name with
    slashes is read and steered whole."""
    for name in ("c:3", "a:1", "b:2"):
        await admin.force_open(name, actor="ops", reason="drill")
    listed = (await http.get("/breakers", params={"limit": 2})).json()
    assert [b["name"] for b in listed["breakers"]] == ["a:1", "b:2"] and listed["known"] == 3
    slashed = "http:api.example.com/v1/mail"
    reset = await http.post(f"/breakers/{slashed}/reset", json={"actor": "ops"}, headers=ADMIN_AUTH)
    read = await http.get(f"/breakers/{slashed}")
    assert reset.status_code == 200 and reset.json()["name"] == slashed
    assert read.status_code == 200 and read.json()["breaker"]["cause"] == "reset"
    assert (await admin.status(slashed)).gen == 1


async def test_real_failures_trip_the_breaker_and_it_refuses(
    http: httpx.AsyncClient, admin: BreakerAdmin
) -> None:
    """Four failed guarded calls (502, each recorded) reach minimum_calls at a 100% failure
    rate: the breaker opens in Redis and the next call is refused with 503 breaker_open and
    Retry-After, without reaching the upstream."""
    answers = [await call(http, "flaky", "failure") for _ in range(4)]
    assert [a.status_code for a in answers] == [502] * 4
    assert answers[0].json()["error"] == "upstream_error"
    status = await admin.status("demo:flaky")
    assert (status.state, status.cause, status.trips) == ("open", "failure_rate", 1)
    refused = await call(http, "flaky", "success")
    assert refused.status_code == 503 and refused.json()["error"] == "breaker_open"
    assert int(refused.headers["Retry-After"]) > 200  # most of the 5 min open period
    detail = (await http.get("/breakers/demo:flaky")).json()
    assert detail["local"]["state"] == "open" and detail["breaker"]["trips"] == 1


async def test_demo_route_is_off_by_default_and_bounded(redis_url: str, key_prefix: str) -> None:
    """Without SESSIONSTORE_DEMO_ROUTES the route does not exist (the server itself never
    has it); with it one process follows at most 16 demo breakers."""
    async with serving(served_app(settings_for(redis_url, key_prefix, demo_routes=False))) as (
        off,
        _,
    ):
        assert (await call(off, "x", "success")).status_code == 404
    async with serving(create_app(settings_for(redis_url, key_prefix))) as (server, _):
        assert (await call(server, "x", "success")).status_code == 404
    async with serving(served_app(settings_for(redis_url, key_prefix))) as (http, _):
        made = [(await call(http, f"u{n}", "success")).status_code for n in range(16)]
        over = await call(http, "u16", "success")
        again = await call(http, "u0", "success")
    assert made == [200] * 16 and again.status_code == 200
    assert over.status_code == 422 and "16" in over.json()["detail"]


async def test_another_replica_sees_the_change_in_its_local_view(
    http: httpx.AsyncClient, redis_url: str, key_prefix: str
) -> None:
    """Replica B guards calls to a breaker; replica A isolates it; B's local view (what its
    calls go by) turns forced_open within the staleness bound plus a margin, B refuses calls,
    and B's metrics count the transition it observed."""
    async with serving(served_app(settings_for(redis_url, key_prefix))) as (other, _):
        assert (await call(other, "shared", "success")).status_code == 200
        opened = await http.post("/breakers/demo:shared/force-open", json=WHY, headers=ADMIN_AUTH)
        assert opened.status_code == 200

        async def seen() -> bool:
            local = (await other.get("/breakers/demo:shared")).json()["local"]
            return bool(local["state"] == "forced_open")

        await eventually(seen, timeout=0.4 + 5.0)
        refused = await call(other, "shared", "success")
        metrics = samples((await other.get("/metrics")).text)
    assert refused.status_code == 503 and refused.json()["breaker"] == "demo:shared"
    observed = "sessionstore_breaker_transitions_observed_total"
    assert metrics[(observed, (("breaker", "demo:shared"), ("to", "forced_open")))] == 1


async def test_metrics_read_breaker_states_from_redis(
    http: httpx.AsyncClient, admin: BreakerAdmin
) -> None:
    """The state gauge, trips and window come from Redis (a breaker steered by someone else
    shows too); this replica's Redis reachability is a gauge of its own."""
    await admin.force_open("elsewhere", actor="ops", reason="drill")
    for _ in range(4):
        await call(http, "flaky", "failure")
    for outcome in ("failure", "success", "success"):  # under minimum_calls: stays closed
        await call(http, "wobbly", outcome)
    found = samples((await http.get("/metrics")).text)
    state = "sessionstore_breaker_state"
    assert found[(state, (("breaker", "elsewhere"), ("state", "forced_open")))] == 1
    assert found[(state, (("breaker", "elsewhere"), ("state", "closed")))] == 0
    assert found[(state, (("breaker", "demo:flaky"), ("state", "open")))] == 1
    assert found[("sessionstore_breaker_trips_total", (("breaker", "demo:flaky"),))] == 1
    window = "sessionstore_breaker_window_calls"
    assert found[(window, (("breaker", "demo:wobbly"), ("kind", "failed")))] == 1
    assert found[(window, (("breaker", "demo:wobbly"), ("kind", "all")))] == 3
    assert found[("sessionstore_breaker_redis_reachable", ())] == 1
    observed = "sessionstore_breaker_transitions_observed_total"
    assert found[(observed, (("breaker", "demo:flaky"), ("to", "open")))] == 1


async def test_session_health_lists_breakers_and_stays_healthy(
    http: httpx.AsyncClient, admin: BreakerAdmin
) -> None:
    """Open and forced breakers are listed with who and why, counted by state, and do not
    make the replica degraded; the replica's registry reports its policy."""
    await admin.force_open(NAME, actor="ops", reason="drill")
    for _ in range(4):
        await call(http, "flaky", "failure")
    await call(http, "fine", "success")
    body = (await http.get("/session-health", headers=HEALTH_AUTH)).json()
    breakers = body["breakers"]
    assert body["status"] == "healthy" and "problem" not in breakers
    assert breakers["known"] == 3
    assert breakers["by_state"] == {
        "closed": 1,
        "open": 1,
        "half_open": 0,
        "forced_open": 1,
        "forced_closed": 0,
    }
    listed = {b["name"]: b for b in breakers["not_closed"]}
    assert listed[NAME]["actor"] == "ops" and listed[NAME]["reason"] == "drill"
    assert listed["demo:flaky"]["cause"] == "failure_rate" and listed["demo:flaky"]["open_until"]
    replica = breakers["replica"]
    assert replica["redis_reachable"] and replica["redis_down_policy"] == "fail_open"
    assert replica["local"] == {"demo:fine": "closed", "demo:flaky": "open"}


async def test_breakers_that_cannot_reach_redis_make_it_degraded(
    replica: tuple[httpx.AsyncClient, Lifespan],
) -> None:
    """When this replica's breakers have lost Redis (here: told so, as a failed breaker round
    trip would) while the PING still answers, the status is degraded with the policy named;
    the next successful round trip makes it healthy again."""
    http, lifespan = replica
    registry: BreakerRegistry = lifespan.state["breakers"]
    registry.redis_health.failed(ConnectionError("lost the breaker node"))
    down = (await http.get("/session-health", headers=HEALTH_AUTH)).json()
    registry.redis_health.ok()
    back = (await http.get("/session-health", headers=HEALTH_AUTH)).json()
    assert down["status"] == "degraded" and "fail_open" in down["breakers"]["problem"]
    assert down["breakers"]["replica"]["redis_reachable"] is False
    assert back["status"] == "healthy"


async def test_healthz_reports_the_registry_without_touching_redis(
    http: httpx.AsyncClient, round_trips: RoundTrips
) -> None:
    """/healthz carries the registry's view (reachable, policy, push) and sends nothing to
    Redis."""

    async def subscribed() -> bool:
        return bool((await http.get("/healthz")).json()["breakers"]["push_live"])

    await eventually(subscribed, timeout=10)
    round_trips.reset()
    answer = await http.get("/healthz")
    assert answer.json()["breakers"] == {
        "redis_reachable": True,
        "redis_down_policy": "fail_open",
        "push_live": True,
    }
    assert round_trips.total == 0


async def test_redis_down_fail_open_and_liveness_says_so(key_prefix: str) -> None:
    """Redis unreachable: under fail_open a guarded call still passes (nothing recorded),
    control answers 503, and /healthz (200) says the breakers cannot reach Redis."""
    settings = settings_for(f"redis://127.0.0.1:{free_port()}/0", key_prefix)
    async with serving(served_app(settings)) as (http, _):
        passed = await call(http, "offline", "success")
        control = await http.post("/breakers/demo:offline/reset", json=WHY, headers=ADMIN_AUTH)
        live = await http.get("/healthz")
        listed = await http.get("/breakers")
    assert passed.status_code == 200 and passed.json()["state"] == "closed"
    assert control.status_code == 503 and control.json()["error"] == "backend_unavailable"
    assert listed.status_code == 503
    assert live.status_code == 200
    assert live.json()["breakers"]["redis_reachable"] is False
