"""fastmcp 4.x apps on several replicas: served by mcp_app, ``ctx.get_state`` and
``set_state`` kept in the roaming session (SessionStateStore)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionstore import Settings
from sessionstore.mcp import SessionStateStore
from tests.mcp.replicas import Replica, replicas, roaming_client

fastmcp = pytest.importorskip("fastmcp")


def make_server() -> object:
    server = fastmcp.FastMCP("fastmcp-test", session_state_store=SessionStateStore())

    @server.tool
    async def count(ctx: fastmcp.Context) -> int:
        """Count this session's calls in ctx state."""
        seen = (await ctx.get_state("seen")) or 0
        await ctx.set_state("seen", seen + 1)
        return int(seen + 1)

    @server.tool
    async def forget(ctx: fastmcp.Context) -> bool:
        """Drop the count."""
        await ctx.delete_state("seen")
        return (await ctx.get_state("seen")) is None

    return server


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix, shards=4)


@pytest.fixture
async def group(settings: Settings) -> AsyncIterator[list[Replica]]:
    async with replicas(2, make_server, settings) as started:
        yield started


async def test_fastmcp_state_follows_the_session_across_replicas(group: list[Replica]) -> None:
    """Every call on the other replica than the one before: ctx state counts 1..6, and
    deleting it is seen by the next call, wherever it runs."""
    async with roaming_client(group) as (client, rotating):
        counts = [(await client.call_tool("count", {})).structured_content for _ in range(6)]
        forgotten = (await client.call_tool("forget", {})).structured_content
        again = (await client.call_tool("count", {})).structured_content
    assert [c["result"] for c in counts if c] == [1, 2, 3, 4, 5, 6]
    assert forgotten == {"result": True} and again == {"result": 1}
    assert len(set(rotating.sent)) == 2


async def test_two_sessions_keep_their_own_state(group: list[Replica]) -> None:
    """Two clients' counts do not mix."""
    async with roaming_client(group) as (a, _), roaming_client(group) as (b, _):
        for _ in range(3):
            await a.call_tool("count", {})
        got = (await b.call_tool("count", {})).structured_content
    assert got == {"result": 1}


def test_the_fastmcp_pin_and_the_private_attribute_used() -> None:
    """The fastmcp release tested, and the low-level server it keeps in `_mcp_server`."""
    from importlib.metadata import version

    from mcp.server.lowlevel.server import Server

    from sessionstore.mcp._fastmcp import fastmcp_server

    assert version("fastmcp").startswith("4.1.")
    assert isinstance(fastmcp_server(make_server()), Server)
