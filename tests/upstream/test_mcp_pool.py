"""MCP upstreams through the pool: `McpServers` on real SDK servers (stdio and Streamable
HTTP), with records in a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from sessionstore import SessionStore
from sessionstore.exceptions import InvalidInput, UpstreamRejected, UpstreamUnavailable
from sessionstore.upstream import (
    Credentials,
    McpServers,
    SecretBox,
    UpstreamPool,
    UpstreamSettings,
    UpstreamState,
)
from sessionstore.upstream.mcp import McpConnection, McpConnector
from tests.polling import eventually
from tests.upstream.mcp_processes import HttpServer, children, stdio_connection

pytestmark = pytest.mark.standalone


@pytest.fixture
def mcp_settings() -> UpstreamSettings:
    """Two attempts, short bounds: the test servers answer in milliseconds."""
    return UpstreamSettings.for_profile(
        "stable", call_timeout=timedelta(seconds=5), connect_timeout=timedelta(seconds=8)
    )


@pytest.fixture
def mcp_credentials(secret_key: str) -> Credentials:
    """Fernet sealing (MCP upstreams without a secret store none)."""
    return Credentials(providers=[], box=SecretBox([SecretStr(secret_key)]))


def mcp_pool(
    store: SessionStore, credentials: Credentials, settings: UpstreamSettings, **kw: Any
) -> UpstreamPool:
    """A pool with its own MCP connector (as a separate process would have)."""
    options: dict[str, Any] = {
        "connectors": [McpConnector.from_settings(settings)],
        "credentials": credentials,
        "settings": settings,
        "maintain_every": None,
    }
    return UpstreamPool(store, **(options | kw))


@pytest.fixture
async def pool(
    store: SessionStore, mcp_credentials: Credentials, mcp_settings: UpstreamSettings
) -> AsyncIterator[UpstreamPool]:
    """An open pool with the MCP connector, no breaker, no jobs."""
    async with mcp_pool(store, mcp_credentials, mcp_settings) as opened:
        yield opened


@pytest.fixture
def weather() -> Iterator[HttpServer]:
    """The Streamable HTTP server ``weather``."""
    server = HttpServer("weather").start()
    yield server
    server.kill()


@pytest.fixture
def backup() -> Iterator[HttpServer]:
    """A second Streamable HTTP server, ``backup``."""
    server = HttpServer("backup").start()
    yield server
    server.kill()


async def _servers(
    store: SessionStore, pool: UpstreamPool, connections: dict[str, Any], **kw: Any
) -> McpServers:
    session = await store.create(user_id="alice")
    servers = McpServers(pool, session.id, connections, **kw)
    await servers.register()
    return servers


async def test_tools_resources_prompts_and_health_on_both_transports(
    store: SessionStore, pool: UpstreamPool, weather: HttpServer
) -> None:
    """A stdio server and an HTTP server through the pool: calls, listing, resource,
    prompt; health pings with a response time kept in the record; no secret stored."""
    servers = await _servers(
        store, pool, {"math": stdio_connection("math"), "weather": weather.connection()}
    )
    for name in ("math", "weather"):
        served = await servers.call_tool(name, "add", {"a": 20, "b": 22})
        assert served.upstream == name and served.attempts == 1
        assert served.value.structured_content == {"result": 42}
        assert (await servers.call_tool(name, "whoami")).value.structured_content == {
            "result": name
        }
        tools = (await servers.list_tools(name)).value
        assert "counter" in {t.name for t in tools.tools}
        resource = (await servers.read_resource(name, "data://greeting")).value
        assert getattr(resource.contents[0], "text", "") == f"hello from {name}"
        prompt = (await servers.get_prompt(name, "greet", {"who": "bo"})).value
        assert "bo" in str(prompt.messages[0].content)
        failed = await servers.call_tool(name, "fail")
        assert failed.value.is_error and failed.attempts == 1  # a result, not retried
        health = await servers.health(name)
        assert health["healthy"] and health["error"] is None and health["error_count"] == 0
        assert health["response_time_ms"] is not None and health["response_time_ms"] > 0
        record = await pool.records.get(servers.session_id, name)
        assert record is not None and record.state is UpstreamState.CONNECTED
        assert record.credential is None and record.response_time_ms is not None
    assert "url" in await servers.health("weather")
    assert "command" in await servers.health("math")
    assert len(pool.open_connections()) == 2
    await servers.close()
    assert pool.open_connections() == []


async def test_concurrent_calls_share_one_connection(
    store: SessionStore, pool: UpstreamPool
) -> None:
    """MCP multiplexes: 20 concurrent calls run on one connection (one child process)."""
    before = children()
    servers = await _servers(store, pool, {"math": stdio_connection("math")})
    results = await asyncio.gather(
        *(servers.call_tool("math", "add", {"a": i, "b": 1}) for i in range(20))
    )
    assert [r.value.structured_content["result"] for r in results] == list(range(1, 21))
    assert len(children()) == len(before) + 1
    assert len(pool.open_connections()) == 1


async def test_stdio_crash_then_the_next_call_reconnects_and_no_zombie_remains(
    store: SessionStore, mcp_credentials: Credentials, mcp_settings: UpstreamSettings
) -> None:
    """The child exits mid-call: that call (not idempotent) fails without a retry; the
    next call starts a new child and works; after the pool closes no child is left."""
    before = children()
    async with mcp_pool(store, mcp_credentials, mcp_settings) as pool:
        servers = await _servers(store, pool, {"math": stdio_connection("math")})
        assert (await servers.call_tool("math", "counter")).value.structured_content == {
            "result": 1
        }
        first = pool.connections.entry(servers.session_id, "math").connection
        with pytest.raises(UpstreamRejected) as crashed:
            await servers.call_tool("math", "crash")
        assert crashed.value.reason == "outcome_unknown"
        assert isinstance(first, McpConnection) and not first.alive
        served = await servers.call_tool("math", "counter")
        assert served.value.structured_content == {"result": 1}  # a new child
        assert served.attempts == 1  # reopening a dead link is upkeep, not a retry
        assert pool.connections.entry(servers.session_id, "math").connection is not first
    assert children() == before


async def test_a_second_process_continues_the_upstream_session_from_the_record(
    store: SessionStore,
    mcp_credentials: Credentials,
    mcp_settings: UpstreamSettings,
    weather: HttpServer,
) -> None:
    """Pool A opens the upstream session and calls a stateful tool; pool B (its own
    connector, nothing shared but Redis) continues that session from the record:
    the counter goes on and the upstream saw one session."""
    async with mcp_pool(store, mcp_credentials, mcp_settings) as pool_a:
        servers_a = await _servers(store, pool_a, {"weather": weather.connection()})
        served = await servers_a.call_tool("weather", "counter")
        assert served.value.structured_content == {"result": 1}
        record = await pool_a.records.get(servers_a.session_id, "weather")
        assert record is not None and record.resume is not None
        assert set(record.resume) == {"session_id", "protocol_version", "initialize_result"}
    async with mcp_pool(store, mcp_credentials, mcp_settings) as pool_b:
        servers_b = McpServers(pool_b, servers_a.session_id, {"weather": weather.connection()})
        assert (await servers_b.call_tool("weather", "counter")).value.structured_content == {
            "result": 2
        }
        assert (await servers_b.call_tool("weather", "sessions")).value.structured_content == {
            "result": 1
        }
        conn = pool_b.connections.entry(servers_a.session_id, "weather").connection
        assert isinstance(conn, McpConnection) and conn.adopted


async def test_http_upstream_down_falls_back_and_returns_when_back(
    store: SessionStore, pool: UpstreamPool, weather: HttpServer, backup: HttpServer
) -> None:
    """The primary is killed: a read-only call falls back (the result says who served);
    restarted: the next call is the primary's again."""
    servers = await _servers(
        store,
        pool,
        {"weather": weather.connection(), "backup": backup.connection()},
        fallbacks={"weather": ["backup"]},
    )
    assert (await servers.call_tool("weather", "whoami")).upstream == "weather"
    weather.kill()
    served = await servers.call_tool("weather", "whoami")
    assert served.upstream == "backup" and served.value.structured_content == {"result": "backup"}
    assert served.fell_back and served.skipped[0][0] == "weather"
    record = await pool.records.get(servers.session_id, "weather")
    assert record is not None and record.state is UpstreamState.RECONNECTING
    weather.start()
    served = await servers.call_tool("weather", "whoami")
    assert served.upstream == "weather" and not served.fell_back


async def test_a_delivered_non_idempotent_call_is_not_retried_nor_sent_to_a_fallback(
    store: SessionStore, pool: UpstreamPool, weather: HttpServer, backup: HttpServer
) -> None:
    """The primary dies while `append` (not idempotent) runs: the call fails at once
    (outcome unknown), no second attempt, and the fallback never sees it."""
    servers = await _servers(
        store,
        pool,
        {"weather": weather.connection(), "backup": backup.connection()},
        fallbacks={"weather": ["backup"]},
    )
    assert (await servers.call_tool("weather", "appended")).value.structured_content == {
        "result": 0
    }
    call = asyncio.create_task(servers.call_tool("weather", "append", {"item": "x", "delay": 30}))

    async def started() -> bool:
        # Another session's connection reads the server's shared count.
        probe = await _servers(store, pool, {"w": weather.connection()})
        value = (await probe.call_tool("w", "appended")).value.structured_content
        return bool(value == {"result": 1})

    await eventually(started, timeout=15)
    weather.kill()
    with pytest.raises(UpstreamRejected) as failed:
        await call
    assert failed.value.reason == "outcome_unknown"
    assert (await servers.call_tool("backup", "appended")).value.structured_content == {"result": 0}


async def test_bad_input_is_refused_fast_and_leaves_nothing(
    store: SessionStore, pool: UpstreamPool
) -> None:
    """Seed-style errors before anything is stored; a missing program or a server that
    never answers the handshake fails fast, no child stays, no connection is kept."""
    session = await store.create()
    with pytest.raises(InvalidInput, match="Unsupported transport"):
        McpServers(pool, session.id, {"x": {"transport": "pigeon"}})
    with pytest.raises(InvalidInput, match="absolute"):
        McpServers(pool, session.id, {"x": {"transport": "streamable_http", "url": "mcp"}})
    with pytest.raises(InvalidInput, match="'args' parameter is required"):
        McpServers(pool, session.id, {"x": {"transport": "stdio", "command": "python"}})
    servers = McpServers(pool, session.id, {"math": stdio_connection("math")})
    with pytest.raises(InvalidInput, match="Couldn't find a server with name 'nope'"):
        await servers.call_tool("nope", "add")
    with pytest.raises(InvalidInput, match="Couldn't find a server"):
        McpServers(pool, session.id, {"math": stdio_connection()}, fallbacks={"math": ["x"]})
    assert await pool.records.list(session.id) == {}

    before = children()
    broken = McpServers(
        pool,
        session.id,
        {
            "missing": {"transport": "stdio", "command": "/nonexistent/server", "args": []},
            "silent": stdio_connection(mode="silent-stdio"),
        },
    )
    await broken.register()
    with pytest.raises(UpstreamRejected) as missing:
        await broken.call_tool("missing", "add")
    assert missing.value.reason == "start_failed"
    record = await pool.records.get(session.id, "missing")
    assert record is not None and record.state is UpstreamState.FAILED
    with pytest.raises(UpstreamUnavailable) as silent:
        await broken.call_tool("silent", "add")
    assert silent.value.reason == "timeout" and silent.value.attempts == 2
    assert pool.open_connections() == [] and children() == before


async def test_health_of_a_2026_upstream_through_the_pool(
    store: SessionStore, pool: UpstreamPool, weather: HttpServer
) -> None:
    """A Streamable HTTP server reached in the 2026-07-28 revision (``mode: auto``): the
    pool's health probe (``server/discover``; ``ping`` is gone there) is healthy with a
    response time, and the record keeps it; the record holds no session to continue."""
    servers = await _servers(store, pool, {"modern": {**weather.connection(), "mode": "auto"}})
    assert (
        await servers.call_tool("modern", "add", {"a": 1, "b": 2})
    ).value.structured_content == {"result": 3}
    conn = pool.connections.entry(servers.session_id, "modern").connection
    assert isinstance(conn, McpConnection) and conn.discovered
    health = await servers.health("modern")
    assert health["healthy"] and health["error"] is None and health["error_count"] == 0
    assert health["response_time_ms"] is not None and health["response_time_ms"] > 0
    record = await pool.records.get(servers.session_id, "modern")
    assert record is not None and record.state is UpstreamState.CONNECTED
    assert record.response_time_ms is not None and record.resume is None
    assert record.spec.mcp is not None and record.spec.mcp.mode == "auto"
    await servers.close()
