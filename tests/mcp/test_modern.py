"""The 2026-07-28 revision on several replicas: request state sealed on one replica is
accepted by another when the keys come from the fleet's secret (and refused with the
SDK's per-process default)."""

from __future__ import annotations

import anyio
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types import (
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
)

from sessionstore import Settings
from sessionstore.mcp import RedisSubscriptionBus, fleet_request_state_security, mcp_app
from tests.mcp.replicas import Replica, replicas, roaming_client

MODERN = "2026-07-28"


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
