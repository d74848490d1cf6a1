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
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from redis.asyncio.connection import AbstractConnection

from sessionstore import RedisClient, RedisSettings, SessionStore, Settings, create_client
from sessionstore.mcp import (
    RedisSubscriptionBus,
    fleet_request_state_security,
    mcp_app,
    mcp_session,
)
from sessionstore.mcp._request_state import CallSessionCodec
from tests.mcp.replicas import Replica, replicas, roaming_client
from tests.polling import eventually

MODERN = "2026-07-28"
MODERN_HEADERS = {
    "MCP-Protocol-Version": MODERN,
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}
HANDSHAKE_HEADERS = {
    "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
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


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command or pipeline sent to Redis from now on (one socket write each, one
    round trip), except the session-event follower's XREADs, which run whatever the
    calls do."""
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | bytearray) else b"".join(command)
        if b"XREAD" not in packed:
            sent.append(packed)
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


async def test_round_trips_of_a_modern_call(
    pair: list[Replica], settings: Settings, writes: list[bytes]
) -> None:
    """Under a global limit a 2026-07-28 call costs two round trips (take the fleet-wide
    lease, give it back); without one it costs none (nothing to count against)."""
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


def call_server(settings: Settings) -> MCPServer:
    """A server whose tools run in rounds under the fleet's request-state keys."""
    security = fleet_request_state_security(settings, audience="modern-test")
    server = MCPServer("modern-test", request_state_security=security)

    @server.tool()
    async def rounds(ctx: Context) -> InputRequiredResult | str:
        """Asks again until its call session has counted two later rounds."""
        if ctx.request_state is None:
            return InputRequiredResult(request_state="more")
        counted = await mcp_session().incr("rounds")
        if counted < 2:
            return InputRequiredResult(request_state="more")
        return f"{counted} {mcp_session().id}"

    @server.tool()
    async def twice(ctx: Context) -> InputRequiredResult | str:
        """Round one asks for another round; any later round answers, touching no state."""
        if ctx.request_state is None:
            return InputRequiredResult(request_state="again")
        return "done"

    @server.tool()
    async def hold_round(ctx: Context) -> InputRequiredResult | str:
        """Round one asks for another; a later round runs until the test releases it."""
        if ctx.request_state is None:
            return InputRequiredResult(request_state="again")
        await RELEASE["hold"].wait()
        return "held"

    return server


async def post_round(
    http: httpx.AsyncClient, url: str, tool: str, state: str | None = None
) -> httpx.Response:
    """POST one round of a 2026-07-28 call (with the state of the round before)."""
    meta = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {}}
    params: dict[str, Any] = {"name": tool, "arguments": {}, "_meta": meta}
    if state is not None:
        params["requestState"] = state
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}
    headers = {**MODERN_HEADERS, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    return await http.post(url, content=json.dumps(body).encode(), headers=headers)


def state_of(answer: httpx.Response) -> str:
    """The request state of a round's answer."""
    assert answer.status_code == 200, answer.text
    state = answer.json()["result"]["requestState"]
    assert isinstance(state, str)
    return state


async def test_round_trips_of_the_rounds_of_a_call(settings: Settings, writes: list[bytes]) -> None:
    """Without a global limit, the round that opens a call session costs one round trip
    (creating it), and a later round two (take and give back its session's lease)."""
    counted: list[int] = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        replicas(1, lambda: call_server(settings), settings) as (replica,),
    ):
        # A first call loads the replica's scripts (and connects): not counted.
        warm = state_of(await post_round(http, replica.url, "twice"))
        await post_round(http, replica.url, "twice", warm)
        writes.clear()
        state = state_of(await post_round(http, replica.url, "twice"))
        counted.append(len(writes))
        writes.clear()
        last = await post_round(http, replica.url, "twice", state)
        counted.append(len(writes))
    assert last.status_code == 200 and last.json()["result"]["structuredContent"] == {
        "result": "done"
    }, last.text
    assert counted == [1, 2]


async def test_the_rounds_of_a_call_share_a_session_across_replicas(
    settings: Settings, redis: RedisClient
) -> None:
    """A call that asks for more input until it has counted two later rounds: its first
    round opens a call session, each later round (on the other replica) names it through
    its request state and counts in it; a handshake client cannot use that session."""
    RELEASE["hold"] = asyncio.Event()
    async with (
        replicas(2, lambda: call_server(settings), settings) as group,
        roaming_client(group, mode=MODERN) as (client, rotating),
    ):
        result = await client.call_tool("rounds", {})
        assert result.structured_content is not None
        counted, session_id = str(result.structured_content["result"]).split(" ")
        session = await SessionStore(redis, settings.session).get(session_id)
        async with httpx.AsyncClient(timeout=30) as http:
            foreign = await http.post(
                group[0].url,
                content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
                headers={**HANDSHAKE_HEADERS, "Mcp-Session-Id": session.id},
            )
    assert counted == "2"
    assert session.state == {"rounds": 2}
    assert len(set(rotating.sent)) == 2
    assert foreign.status_code == 404


async def test_a_call_session_has_the_per_session_limit_and_its_end_is_a_clear_error(
    settings: Settings, redis: RedisClient
) -> None:
    """With one request per session, a round running on one replica makes the same round
    sent to the other answer 429 with Retry-After; once the call session has ended, a
    round naming it is answered as an expired request state and runs nothing."""
    one = settings.model_copy(
        update={"session": settings.session.model_copy(update={"max_requests_per_session": 1})}
    )
    RELEASE["hold"] = asyncio.Event()
    codec = CallSessionCodec.from_settings(one)
    assert codec is not None
    store = SessionStore(redis, one.session)
    async with (
        replicas(2, lambda: call_server(one), one) as (first, second),
        httpx.AsyncClient(timeout=30) as http,
    ):
        state = state_of(await post_round(http, first.url, "hold_round"))
        session_id = codec.session_of(state)
        assert session_id is not None
        running = asyncio.create_task(post_round(http, first.url, "hold_round", state))

        async def held() -> bool:
            return (await store.get(session_id)).active_requests == 1

        await eventually(held)
        refused = await post_round(http, second.url, "hold_round", state)
        RELEASE["hold"].set()
        done = await running
        await store.delete(session_id)
        RELEASE["hold"] = asyncio.Event()  # a round that ran would wait: none may
        ended = await post_round(http, second.url, "hold_round", state)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["message"] == "Too many requests in flight for this session"
    assert done.status_code == 200 and "held" in done.text
    assert ended.status_code == 400
    assert ended.json()["error"]["message"] == "Invalid or expired requestState"
