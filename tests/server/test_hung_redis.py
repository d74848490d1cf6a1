"""A hung Redis (SIGSTOP: connections stay open, nothing answers) against a real
``sessionstore serve`` process: every request gets its 503 fast, however many are in
flight, and the replica serves again by itself once Redis answers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Iterator

import httpx
import pytest

from tests.fleet.served import ServedFleet
from tests.polling import eventually

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

TOKEN = "hung-health-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVICE_TOKEN = "hung-service-t0ken"
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
HEADER = "Mcp-Session-Id"
CONCURRENT = 150
#: A socket timeout far above the target (1 s from arrival), so that a request that
#: waits for it cannot hide in a loaded machine's noise. Before the request budget and
#: the outage latch every request waited for it, behind a queue on the connection pool.
SOCKET_TIMEOUT_SECONDS = 15
#: On a loaded test machine 150 concurrent requests take a while even when Redis
#: answers (and a 503 costs about what an answer does): the bound is twice the same
#: burst's slowest answer with Redis up, plus this slack, and must stay below the
#: socket timeout for the test to tell anything.
SLACK_SECONDS = 2.0
#: Longer than the whole test: no connection of the test is closed for being idle.
IDLE_SECONDS = 120


@pytest.fixture(scope="module")
def fleet() -> Iterator[ServedFleet]:
    """One replica on a private Redis."""
    settings = {
        "SESSIONSTORE_HEALTH_TOKEN": TOKEN,
        "SESSIONSTORE_SERVICE_TOKENS": SERVICE_TOKEN,
        "SESSIONSTORE_REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT_SECONDS),
        # The bursts reuse connections opened before; on a loaded machine they may sit
        # idle longer than the defaults allow, and a request sent as the replica
        # closes its connection fails instead of getting its answer.
        "SESSIONSTORE_KEEP_ALIVE_TIMEOUT": str(IDLE_SECONDS),
        "SESSIONSTORE_REQUEST_HEADER_TIMEOUT": str(IDLE_SECONDS),
    }
    served = ServedFleet(1, settings).start()
    yield served
    served.stop()


def _redis_pid(fleet: ServedFleet) -> int:
    assert fleet.redis.process is not None
    return fleet.redis.process.pid


async def _timed(request: Awaitable[httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    answer = await request
    return time.monotonic() - started, answer


async def test_every_request_gets_a_fast_503_with_retry_after(fleet: ServedFleet) -> None:
    """150 concurrent requests (session reads through the middleware's lease, creates
    and reads through the routes) while Redis is stopped: all 503 backend_unavailable
    with Retry-After, each within the bound (twice the same burst with Redis up, plus
    slack; far below the socket timeout every request waited for before);
    /session-health 503s with Retry-After too;
    after SIGCONT the session made before is served again without a restart."""
    base = fleet.replicas[0].url
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as http:
        # Open the connections first: the clock measures the replica, not TCP set-up.
        opened = await asyncio.gather(*(http.get("/healthz") for _ in range(CONCURRENT)))
        assert {answer.status_code for answer in opened} == {200}
        made = await http.post("/sessions", json={"state": {"kept": True}}, headers=SERVICE)
        assert made.status_code == 201, made.text
        session_id = made.json()["id"]
        requests = [
            lambda: http.get("/session", headers={HEADER: session_id}),
            lambda: http.post("/sessions", json={}, headers=SERVICE),
            lambda: http.get(f"/sessions/{session_id}", headers=SERVICE),
        ]
        burst = [requests[n % len(requests)] for n in range(CONCURRENT)]
        baseline = await asyncio.gather(*(_timed(request()) for request in burst))
        bound = 2 * max(took for took, _ in baseline) + SLACK_SECONDS
        assert bound < SOCKET_TIMEOUT_SECONDS, "the machine is too loaded to tell"
        os.kill(_redis_pid(fleet), signal.SIGSTOP)
        try:
            timed = await asyncio.gather(*(_timed(request()) for request in burst))
            health_took, health = await _timed(http.get("/session-health", headers=AUTH))
        finally:
            os.kill(_redis_pid(fleet), signal.SIGCONT)

        statuses = Counter(answer.status_code for _, answer in timed)
        assert statuses == {503: CONCURRENT}
        assert all(answer.headers.get("Retry-After") for _, answer in timed)
        assert {answer.json()["error"] for _, answer in timed} == {"backend_unavailable"}
        slowest = max(took for took, _ in timed)
        assert slowest < bound, f"the slowest 503 took {slowest:.2f}s (bound {bound:.2f}s)"
        assert health.status_code == 503, health.text
        assert health.headers.get("Retry-After"), health.headers
        assert health_took < bound

        async def serving() -> bool:
            answer = await http.get(f"/sessions/{session_id}", headers=SERVICE)
            return answer.status_code == 200 and answer.json()["state"] == {"kept": True}

        await eventually(serving, timeout=30, interval=0.05)
        assert (await http.get("/session", headers={HEADER: session_id})).status_code == 200
