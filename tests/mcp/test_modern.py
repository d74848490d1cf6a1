"""The 2026-07-28 revision on several replicas: request state sealed on one replica is
accepted by another when the keys come from the fleet's secret (and refused with the
SDK's per-process default)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
)
from redis.asyncio.connection import AbstractConnection

from sessionstore import RedisClient, RedisSettings, SessionStore, Settings, create_client
from sessionstore.mcp import RedisSubscriptionBus, fleet_request_state_security, mcp_app
from tests.mcp.replicas import Replica, replicas, roaming_client
from tests.polling import eventually

MODERN = "2026-07-28"
MODERN_HEADERS = {
    "MCP-Protocol-Version": MODERN,
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}
#: Released by the test: the `hold` tool waits for it.
RELEASE: dict[str, asyncio.Event] = {}


async def modern_call(
    http: httpx.AsyncClient, url: str, tool: str, request_id: int = 7
) -> httpx.Response:
    """POST a self-contained 2026-07-28 tools/call, as a client sends it."""
    meta = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {}}
    params = {"name": tool, "arguments": {}, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    headers = {**MODERN_HEADERS, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    return await http.post(url, content=json.dumps(body).encode(), headers=headers)


def make_server(
    security: RequestStateSecurity | None, bus: RedisSubscriptionBus | None = None
) -> MCPServer:
    server = MCPServer("modern-test", request_state_security=security, subscriptions=bus)

    @server.tool()
    async def change(ctx: Context) -> int:
        """Announce that the tool list changed; returns which bus (replica) published it."""
        await ctx.notify_tools_changed()
        return id(bus)

    @server.tool()
    async def hold() -> str:
        """Run until the test releases it."""
        await RELEASE["hold"].wait()
        return "held"

    @server.tool()
    async def where() -> int:
        """Which bus (replica) serves this call; publishes nothing."""
        return id(bus)

    @server.tool()
    async def ask(ctx: Context) -> InputRequiredResult | str:
        """Round one asks for a name with sealed state; round two reads both back."""
        if ctx.input_responses is None:
            question = ElicitRequest(
                params=ElicitRequestFormParams(
                    message="Your name?",
                    requested_schema={"type": "object", "properties": {"name": {"type": "string"}}},
                )
            )
            return InputRequiredResult(input_requests={"name": question}, request_state="round-1")
        answer = ctx.input_responses["name"]
        assert isinstance(answer, ElicitResult) and answer.content is not None
        return f"{ctx.request_state}: hello {answer.content['name']}"

    return server


async def answer(context: object, params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "ada"})


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url, key_prefix=key_prefix, shards=4, secret_key="fleet-secret-" + "k" * 32
    )


async def test_request_state_sealed_on_one_replica_is_accepted_by_another(
    settings: Settings,
) -> None:
    """The retried call lands on the other replica, which unseals the state."""
    security = fleet_request_state_security(settings, audience="modern-test")
    async with (
        replicas(2, lambda: make_server(security), settings) as group,
        roaming_client(group, mode=MODERN, elicitation_callback=answer) as (client, rotating),
    ):
        results = [await client.call_tool("ask", {}) for _ in range(2)]
    assert [r.structured_content for r in results] == [{"result": "round-1: hello ada"}] * 2
    assert len(set(rotating.sent)) == 2


async def test_per_process_request_state_is_refused_by_another_replica(
    settings: Settings,
) -> None:
    """With the SDK's default (a key per process) the retry on the other replica fails:
    the reason the fleet's keys are needed."""
    async with (
        replicas(2, lambda: make_server(None), settings) as group,
        roaming_client(group, mode=MODERN, elicitation_callback=answer) as (client, _),
    ):
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            await client.call_tool("ask", {})


def test_fleet_request_state_needs_a_secret(redis_url: str) -> None:
    """Without a secret key there is nothing to share: a clear error."""
    with pytest.raises(ValueError, match="SESSIONSTORE_SECRET_KEY"):
        fleet_request_state_security(Settings(redis_url=redis_url), audience="x")


async def test_a_change_published_on_one_replica_reaches_a_listener_on_another(
    settings: Settings,
) -> None:
    """A client listens (subscriptions/listen) on one replica; a tool on the other
    publishes a change to its RedisSubscriptionBus; the listener hears it."""
    group, buses = [], []
    for _ in range(2):
        bus = RedisSubscriptionBus()
        buses.append(bus)
        group.append(Replica(mcp_app(make_server(None, bus), settings, subscriptions=bus)))
    for replica in group:
        await replica.start()
    try:
        async with (
            roaming_client(group, mode=MODERN) as (client, _),
            client.listen(tools_list_changed=True) as subscription,
        ):
            (listening,) = [id(b) for b in buses if b._listeners]
            # Calls alternate between the replicas: step until the next one runs on the
            # replica without the listener, so the only change is published there.
            for _ in range(4):
                served = (await client.call_tool("where", {})).structured_content
                if served is not None and served["result"] == listening:
                    break
            published = (await client.call_tool("change", {})).structured_content
            assert published is not None and published["result"] != listening
            with anyio.fail_after(10):
                event = await anext(subscription)
        assert isinstance(event, ToolsListChanged)
    finally:
        for replica in group:
            await replica.stop()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


@pytest.fixture
def limited(settings: Settings) -> Settings:
    """The fleet allows one request in flight."""
    return settings.model_copy(
        update={"session": settings.session.model_copy(update={"max_requests_global": 1})}
    )


@pytest.fixture
async def pair(limited: Settings) -> AsyncIterator[list[Replica]]:
    RELEASE["hold"] = asyncio.Event()
    async with replicas(2, lambda: make_server(None), limited) as group:
        yield group


@pytest.fixture
async def redis(limited: Settings) -> AsyncIterator[RedisClient]:
    """A client of the replicas' Redis."""
    assert limited.redis_url is not None
    client = create_client(RedisSettings.from_dsn(limited.redis_url))
    yield client
    await client.aclose()


async def in_flight(redis: RedisClient, settings: Settings) -> int:
    """Fleet-wide request leases held now."""
    key = SessionStore(redis, settings.session).keys.global_requests()
    return int(await redis.zcard(key))


async def test_the_global_limit_holds_for_modern_requests_across_replicas(
    pair: list[Replica], limited: Settings, redis: RedisClient
) -> None:
    """With one request allowed in the fleet, a 2026-07-28 call running on one replica
    makes a call to the other answer 503 with Retry-After and a JSON-RPC error, touching
    nothing; once it ends its lease is back and calls are served again."""
    first, second = pair
    async with httpx.AsyncClient(timeout=30) as http:
        running = asyncio.create_task(modern_call(http, first.url, "hold"))
        await eventually(lambda: _equals(in_flight(redis, limited), 1))
        refused = await modern_call(http, second.url, "where")
        assert await in_flight(redis, limited) == 1
        RELEASE["hold"].set()
        done = await running
        served = await modern_call(http, second.url, "where")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["message"] == "Too many requests in flight"
    assert done.status_code == 200 and "held" in done.text
    assert served.status_code == 200 and '"result"' in served.text
    assert await in_flight(redis, limited) == 0


async def test_a_modern_call_counts_against_the_limit_of_handshake_sessions(
    pair: list[Replica], limited: Settings, redis: RedisClient
) -> None:
    """The fleet-wide limit is one for both revisions: while a 2026-07-28 call runs, a
    handshake-era session's call gets the 503 too."""
    async with httpx.AsyncClient(timeout=30) as http, roaming_client(pair) as (client, _):
        running = asyncio.create_task(modern_call(http, pair[0].url, "hold"))
        await eventually(lambda: _equals(in_flight(redis, limited), 1))
        with pytest.raises(MCPError, match="Too many requests in flight"):
            await client.call_tool("where", {})
        RELEASE["hold"].set()
        assert (await running).status_code == 200


async def test_a_listen_stream_holds_no_request_lease(
    pair: list[Replica], limited: Settings, redis: RedisClient
) -> None:
    """`subscriptions/listen` is a connection, not a request: with a listener open, the
    fleet's one request slot still serves calls."""
    async with (
        roaming_client(pair, mode=MODERN) as (client, _),
        client.listen(tools_list_changed=True),
    ):
        results = [await client.call_tool("where", {}) for _ in range(2)]
    assert all(not r.is_error for r in results)
    assert await in_flight(redis, limited) == 0


async def test_round_trips_of_a_modern_call(
    pair: list[Replica], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a global limit a 2026-07-28 call costs two round trips (take the fleet-wide
    lease, give it back); without one it costs none (nothing to count against)."""
    writes: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | bytearray) else b"".join(command)
        if b"XREAD" not in packed:  # the session-event follower, whatever the calls do
            writes.append(packed)
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    counted: list[int] = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        replicas(1, lambda: make_server(None), settings) as (unlimited,),
    ):
        for url in (pair[0].url, unlimited.url):
            assert (await modern_call(http, url, "where", 1)).status_code == 200
            writes.clear()
            answer = await modern_call(http, url, "where", 2)
            assert answer.status_code == 200 and '"result"' in answer.text
            counted.append(len(writes))
    assert counted == [2, 0]
