"""Slow and abusive clients against a real `sessionstore serve` process: trickled bodies
hold no request lease, late bodies and late headers answer 408, and one replica serves a
bounded number of connections."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.fleet.served import ServedFleet, metric_sample
from tests.polling import eventually

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

HEADER = "Mcp-Session-Id"
#: The default per-session limit: as many trickling requests as the session has slots.
SLOTS = 32
#: Long enough for the poll below on a loaded machine, short enough to wait for a 408.
DEADLINE_SECONDS = 8
CONNECTIONS = SLOTS + 16
#: Above the header deadline, which then closes idle connections: later than
#: uvicorn's own keep-alive default (5 s) would.
KEEP_ALIVE_SECONDS = 60
UVICORN_KEEP_ALIVE_SECONDS = 5
SERVICE_TOKEN = "slow-clients-service-t0ken"
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


@pytest.fixture(scope="module")
def fleet() -> Iterator[ServedFleet]:
    settings = {
        "SESSIONSTORE_KEY_PREFIX": "slow" + secrets.token_hex(3),
        "SESSIONSTORE_SHARDS": "4",
        "SESSIONSTORE_MAX_REQUESTS_PER_SESSION": str(SLOTS),
        "SESSIONSTORE_REQUEST_BODY_TIMEOUT": str(DEADLINE_SECONDS),
        "SESSIONSTORE_REQUEST_HEADER_TIMEOUT": str(DEADLINE_SECONDS),
        "SESSIONSTORE_SERVER_LIMIT_CONCURRENCY": str(CONNECTIONS),
        "SESSIONSTORE_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_SECONDS),
        "SESSIONSTORE_SERVICE_TOKENS": SERVICE_TOKEN,
    }
    served = ServedFleet(1, settings).start()
    yield served
    served.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


async def create(http: httpx.AsyncClient, base: str) -> str:
    answer = await http.post(f"{base}/sessions", json={}, headers=SERVICE)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


@asynccontextmanager
async def connections(
    port: int, count: int, first_bytes: bytes
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """`count` raw connections to the replica, each having sent `first_bytes`; closed on exit."""
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    try:
        for _, writer in opened:
            writer.write(first_bytes)
            await writer.drain()
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


def slow_patch(session_id: str) -> bytes:
    """The headers of a state PATCH and the first byte of its 100-byte body."""
    return (
        f"PATCH /sessions/{session_id}/state HTTP/1.1\r\nHost: replica\r\n"
        f"{HEADER}: {session_id}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{"
    ).encode()


async def metric(http: httpx.AsyncClient, base: str, name: str) -> float:
    text = (await http.get(f"{base}/metrics")).text
    try:
        return metric_sample(text, name)
    except AssertionError:
        return 0.0  # a gauge this server does not have


async def test_trickled_bodies_do_not_lock_the_session_out(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """As many slow-body PATCHes as the session has request slots, carrying its id: once
    the server holds all of them (as leases, or as bodies still being read), the session's
    real client still reads and writes it (no 429): the lease is taken after the body."""
    base, port = fleet.replicas[0].url, fleet.replicas[0].port
    session_id = await create(http, base)
    async with connections(port, SLOTS, slow_patch(session_id)):

        async def all_held() -> bool:
            leased = await metric(http, base, "sessionstore_request_leases_in_flight")
            reading = await metric(http, base, "sessionstore_request_bodies_reading")
            return leased + reading >= SLOTS

        await eventually(all_held, timeout=DEADLINE_SECONDS / 2)
        read = await http.get(f"{base}/session", headers={HEADER: session_id})
        wrote = await http.patch(
            f"{base}/sessions/{session_id}/state",
            json={"values": {"real": True}},
            headers={HEADER: session_id},
        )
        assert read.status_code == 200, read.text
        assert wrote.status_code == 200, wrote.text
        assert await metric(http, base, "sessionstore_request_leases_in_flight") == 0


async def answer_of(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection (bounded wait)."""
    return await asyncio.wait_for(reader.read(), timeout=DEADLINE_SECONDS * 4)


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """A body still short of its Content-Length at the deadline: 408 request_timeout, the
    connection closed, the session unchanged (the write never reached the store)."""
    base, port = fleet.replicas[0].url, fleet.replicas[0].port
    session_id = await create(http, base)
    async with connections(port, 1, slow_patch(session_id)) as [(reader, _)]:
        answer = await answer_of(reader)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error":"request_timeout"' in answer and b"connection: close" in answer.lower()
    read = await http.get(f"{base}/sessions/{session_id}", headers={HEADER: session_id})
    assert read.json()["version"] == 1


async def test_headers_that_do_not_arrive_in_time_get_408(fleet: ServedFleet) -> None:
    """A request whose headers stop half-way: 408, and the connection is closed."""
    port = fleet.replicas[0].port
    async with connections(port, 1, b"GET /healthz HTTP/1.1\r\nHost: rep") as [(reader, _)]:
        answer = await answer_of(reader)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_an_idle_keep_alive_connection_lives_until_the_lower_timeout(
    fleet: ServedFleet,
) -> None:
    """After a response, a keep-alive connection that sends nothing stays open past
    uvicorn's default keep-alive (SESSIONSTORE_KEEP_ALIVE_TIMEOUT is above it) and is
    closed, without a 408, at the header deadline (the lower of the two)."""
    port = fleet.replicas[0].port
    request = b"GET /healthz HTTP/1.1\r\nHost: replica\r\n\r\n"
    async with connections(port, 1, request) as [(reader, _)]:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(DEADLINE_SECONDS * 2):
            rest = await reader.read()
        idle = asyncio.get_running_loop().time() - started
    assert rest == b""  # closed, without a 408: nothing of a next request had arrived
    assert idle > UVICORN_KEEP_ALIVE_SECONDS, f"closed after {idle:.1f}s"


async def test_a_replica_serves_a_bounded_number_of_connections(
    fleet: ServedFleet, http: httpx.AsyncClient
) -> None:
    """With the replica's connection limit taken by idle connections, a request gets 503;
    once they close, requests are served again."""
    base, port = fleet.replicas[0].url, fleet.replicas[0].port

    async def status() -> int:
        # A fresh connection each time: the client's pooled one would count as well.
        async with httpx.AsyncClient(timeout=10.0) as fresh:
            return (await fresh.get(f"{base}/healthz")).status_code

    async with connections(port, CONNECTIONS, b""):
        refused: Any = await eventually(
            lambda: _is(status(), 503), timeout=DEADLINE_SECONDS / 2, interval=0.05
        )
        assert refused
    assert await eventually(lambda: _is(status(), 200), timeout=30, interval=0.05)


async def _is(answer: Any, expected: int) -> bool:
    return bool(await answer == expected)
