"""Proof of roaming MCP sessions: a real Redis, three uvicorn replicas of the example MCP
server and a worker, HAProxy round robin in front (no stickiness), driven by the SDK's
own client."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequestParams, ElicitResult
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from sessionstore import RedisSettings, SessionStatus, SessionStore, Tombstone, create_client
from sessionstore.upstream import SecretBox
from tests.conftest import failed
from tests.mcp.fleet import McpFleet
from tests.polling import eventually

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PREFIX = "mcpfleet" + secrets.token_hex(3)
#: Every session expires this long after it was opened (an open GET stream keeps a
#: session from idling out, so the test of expiry uses the absolute lifetime).
LIFETIME_SECONDS = 15


@pytest.fixture(scope="module")
def fleet() -> Iterator[McpFleet]:
    if shutil.which("haproxy") is None and not os.access("/usr/sbin/haproxy", os.X_OK):
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    settings = {
        "SESSIONSTORE_KEY_PREFIX": PREFIX,
        "SESSIONSTORE_SHARDS": "4",
        "SESSIONSTORE_ABSOLUTE_LIFETIME": str(LIFETIME_SECONDS),
        "SESSIONSTORE_SWEEP_INTERVAL": "1",
        "SESSIONSTORE_REQUEST_LEASE_TTL": "5",
        # The example seals 2026-07-28 request state with keys derived from it.
        "SESSIONSTORE_SECRET_KEY": SecretBox.generate_key(),
    }
    fleet = McpFleet(3, settings, workers=1).start()
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(autouse=True)
def logs_of_a_failure(request: pytest.FixtureRequest, fleet: McpFleet) -> Iterator[None]:
    """A failed test prints the fleet's process logs (HAProxy logs every request)."""
    yield
    if failed(request.node):
        print(fleet.logs())


@pytest.fixture(scope="module")
def balancer(fleet: McpFleet) -> Iterator[str]:
    with fleet.balanced() as url:
        yield f"{url}/mcp"


@pytest.fixture
async def store(fleet: McpFleet) -> AsyncIterator[SessionStore]:
    client = create_client(RedisSettings.from_dsn(fleet.redis.url))
    yield SessionStore(client, fleet.settings.session)
    await client.aclose()


async def tick(client: Client) -> dict[str, Any]:
    """One call of the example's ``tick`` tool: counter, replica, session id."""
    result = await client.call_tool("tick", {})
    assert not result.is_error, result
    assert result.structured_content is not None
    return result.structured_content


async def raw_call(url: str, session_id: str) -> httpx.Response:
    """A tools/call POST for `session_id` straight to `url`, outside the SDK client."""
    headers = {
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
        "Accept": "application/json, text/event-stream",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "tick"}}
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body, headers=headers, timeout=10)


def opened(fleet: McpFleet) -> dict[str, float]:
    return {r.name: r.metric("sessionstore_mcp_sessions_opened_total") for r in fleet.replicas}


async def test_counter_is_exact_while_every_call_lands_on_another_replica(
    balancer: str, fleet: McpFleet
) -> None:
    """Twelve calls through round robin: the counter runs 1..12 with no 404, no two
    consecutive calls are served by the same replica, and every replica served some."""
    async with Client(balancer, mode="legacy") as client:
        calls = [await tick(client) for _ in range(12)]
    assert [c["counter"] for c in calls] == list(range(1, 13))
    replicas = [c["replica"] for c in calls]
    assert all(a != b for a, b in itertools.pairwise(replicas)), replicas
    assert set(replicas) == {r.name for r in fleet.replicas}
    adopted = sum(r.metric("sessionstore_mcp_sessions_adopted_total") for r in fleet.replicas)
    assert adopted >= 2  # the two replicas that did not open it rebuilt it


async def test_concurrent_clients_and_increments_end_exact(balancer: str) -> None:
    """Four clients, each with eight concurrent increments spread over the replicas: each
    session's counter ends at exactly eight and every value 1..8 was handed out once."""

    async def one_client() -> list[int]:
        async with Client(balancer, mode="legacy") as client:
            results = await asyncio.gather(*(tick(client) for _ in range(8)))
            final = await tick(client)
        assert final["counter"] == 9
        return sorted(r["counter"] for r in results)

    outcomes = await asyncio.gather(*(one_client() for _ in range(4)))
    assert outcomes == [list(range(1, 9))] * 4


async def test_session_goes_on_after_its_opening_replica_is_killed(
    balancer: str, fleet: McpFleet
) -> None:
    """The replica that answered initialize is SIGKILLed mid-session; the next calls are
    served by the others and the counter goes on without a gap."""
    before = opened(fleet)
    async with Client(balancer, mode="legacy") as client:
        first = [await tick(client) for _ in range(3)]
        after = opened(fleet)
        (creator,) = [name for name in after if after[name] > before[name]]
        victim = fleet.replica_named(creator)
        victim.kill()
        try:
            rest = [await tick(client) for _ in range(6)]
        finally:
            fleet.restart(victim)
    assert [c["counter"] for c in first + rest] == list(range(1, 10))
    assert creator not in {c["replica"] for c in rest}


async def test_delete_through_one_replica_is_404_on_every_replica(
    balancer: str, fleet: McpFleet, store: SessionStore
) -> None:
    """Leaving the client sends DELETE through the balancer: the session is closed in the
    store and every replica answers 404 (the SDK's JSON-RPC error) for it."""
    async with Client(balancer, mode="legacy") as client:
        calls = [await tick(client) for _ in range(4)]
    session_id = calls[0]["session"]
    found = await store.lookup(session_id)
    assert isinstance(found, Tombstone) and found.status is SessionStatus.CLOSED
    for replica in fleet.replicas:
        answer = await raw_call(f"{replica.url}/mcp", session_id)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["message"] == "Session not found"

    async def copies_dropped() -> bool:
        return all(r.metric("sessionstore_mcp_local_sessions") == 0 for r in fleet.replicas)

    await eventually(copies_dropped, timeout=10)


async def test_session_expired_by_a_worker_answers_404_and_a_new_initialize_works(
    balancer: str, fleet: McpFleet, store: SessionStore
) -> None:
    """A session past its lifetime is expired by the worker's sweep; every replica drops
    its copy, the client's next call gets the 404 error, and a fresh initialize through
    the same balancer works."""
    async with Client(balancer, mode="legacy") as client:
        session_id = (await tick(client))["session"]

        async def swept() -> bool:
            found = await store.lookup(session_id)  # no side effect: does not slide
            return isinstance(found, Tombstone) and found.status is SessionStatus.EXPIRED

        await eventually(swept, timeout=LIFETIME_SECONDS + 20, interval=0.2)

        async def copies_dropped() -> bool:
            return sum(
                r.metric("sessionstore_mcp_local_sessions_dropped_total", reason="expired")
                for r in fleet.replicas
            ) >= 1 and all(r.metric("sessionstore_mcp_local_sessions") == 0 for r in fleet.replicas)

        await eventually(copies_dropped, timeout=10)
        with pytest.raises(MCPError, match="Session not found"):
            await client.call_tool("tick", {})
    async with Client(balancer, mode="legacy") as fresh:
        again = await tick(fresh)
    assert again["counter"] == 1 and again["session"] != session_id


async def test_a_closed_stream_resumes_through_the_balancer_once_and_in_order(
    balancer: str, fleet: McpFleet
) -> None:
    """The tool closes its SSE stream after step 2 and keeps working; the client resumes
    with Last-Event-ID through round robin and gets every step once, in order, and the
    result."""
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    before = sum(r.metric("sessionstore_mcp_streams_resumed_total") for r in fleet.replicas)
    async with Client(balancer, mode="legacy") as client:
        result = await client.call_tool("countdown", {"steps": 6}, progress_callback=on_progress)
    assert not result.is_error, result
    assert progress == [1, 2, 3, 4, 5, 6]
    after = sum(r.metric("sessionstore_mcp_streams_resumed_total") for r in fleet.replicas)
    assert after > before


async def test_notifications_reach_the_client_from_every_replica(balancer: str) -> None:
    """Six calls of a tool that notifies, spread over the three replicas by round robin:
    all six notifications reach the client through its one GET stream."""
    seen: list[str] = []

    async def on_message(message: object) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method == "notifications/tools/list_changed":
            seen.append(method)

    async with Client(balancer, mode="legacy", message_handler=on_message) as client:
        senders = set()
        for _ in range(6):
            result = await client.call_tool("announce", {})
            senders.add(result.structured_content["result"])  # type: ignore[index]

        async def all_arrived() -> bool:
            return len(seen) == 6

        await eventually(all_arrived, timeout=15)
    assert len(senders) == 3


async def test_a_foreign_last_event_id_gets_400_on_every_replica(
    balancer: str, fleet: McpFleet
) -> None:
    """A GET resuming session A with an event id of session B gets 400 from every
    replica, and nothing is replayed."""
    async with Client(balancer, mode="legacy") as a, Client(balancer, mode="legacy") as b:
        mine = (await tick(a))["session"]
        await tick(b)
        replayed = sum(r.metric("sessionstore_mcp_events_replayed_total") for r in fleet.replicas)
        forged = "AAAAAAAA-1-0"
        for replica in fleet.replicas:
            async with httpx.AsyncClient() as http:
                answer = await http.get(
                    f"{replica.url}/mcp",
                    headers={
                        "Mcp-Session-Id": mine,
                        "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
                        "Accept": "text/event-stream",
                        "Last-Event-ID": forged,
                    },
                    timeout=10,
                )
            assert answer.status_code == 400, answer.text
        again = sum(r.metric("sessionstore_mcp_events_replayed_total") for r in fleet.replicas)
    assert again == replayed


async def test_elicitations_are_answered_whichever_replica_the_answer_reaches(
    balancer: str, fleet: McpFleet
) -> None:
    """Six elicitations from tools spread over the replicas: each answer POST is balanced
    independently, answers that reach another replica are relayed, and every tool
    greets with the name given."""

    async def answer(context: object, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "ada"})

    before = sum(r.metric("sessionstore_mcp_answers_relayed_total") for r in fleet.replicas)
    async with Client(balancer, mode="legacy", elicitation_callback=answer) as client:
        greetings = [(await client.call_tool("greet", {})).structured_content for _ in range(6)]
    assert all(g is not None and g["result"].endswith("hello ada") for g in greetings)
    relayed = sum(r.metric("sessionstore_mcp_answers_relayed_total") for r in fleet.replicas)
    assert relayed > before  # with three replicas, some answers reach another one


async def test_the_2026_07_28_revision_carries_request_state_across_replicas(
    balancer: str,
) -> None:
    """The newer revision (no Mcp-Session-Id): a tool asks for input with sealed request
    state; the client's retry with the answer goes through round robin to another
    replica, which unseals the state (keys from the fleet's secret) and finishes. Three
    calls in a row, each asked and answered on different replicas."""

    async def answer(context: object, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "ada"})

    async with Client(balancer, mode="2026-07-28", elicitation_callback=answer) as client:
        results = [await client.call_tool("ask_name", {}) for _ in range(3)]
    texts = [r.structured_content["result"] for r in results if r.structured_content]
    assert len(texts) == 3 and all(t.endswith("hello ada") for t in texts), results
    rounds = [re.match(r"asked on (\S+), answered on (\S+):", t) for t in texts]
    assert all(m is not None and m[1] != m[2] for m in rounds), texts
