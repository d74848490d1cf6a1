"""The MCP connector against real SDK servers: stdio children and Streamable HTTP (uvicorn)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr

from sessionstore.exceptions import InvalidInput
from sessionstore.upstream import Action, ConnectionDropped, UpstreamSpec
from sessionstore.upstream._mcp_target import McpTarget
from sessionstore.upstream.mcp import (
    McpConnection,
    McpConnector,
    NotDelivered,
    OutcomeUnknown,
    StartFailed,
    classify_mcp,
)
from tests.polling import eventually
from tests.upstream.mcp_processes import HttpServer, children, stdio_connection


def spec_of(connection: dict[str, Any], name: str = "tools") -> UpstreamSpec:
    """An MCP upstream spec from a seed-style connection dict."""
    return UpstreamSpec(name=name, kind="mcp", mcp=McpTarget.from_connection(connection))


@pytest.fixture
def connector() -> McpConnector:
    """Short timeouts: the test servers answer in milliseconds."""
    return McpConnector(call_timeout=5.0, connect_timeout=8.0)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A Streamable HTTP test server called ``weather``."""
    server = HttpServer("weather").start()
    yield server
    server.kill()


async def _connect(connector: McpConnector, spec: UpstreamSpec, **kw: Any) -> McpConnection:
    return await connector.connect(spec, None, **kw)


async def test_stdio_tools_resources_prompts_and_tool_errors(connector: McpConnector) -> None:
    """Over stdio: tools, a tool error as a result, resources, prompts, ping; the child
    is gone after close (no zombie)."""
    before = children()
    conn = await _connect(connector, spec_of(stdio_connection("math")))
    try:
        assert conn.alive and len(children()) == len(before) + 1
        result = await conn.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error and result.structured_content == {"result": 5}
        failed = await conn.call_tool("fail")
        assert failed.is_error  # the tool's answer, not a fault
        assert connector.result_fault(failed) is None
        names = {t.name for t in (await conn.list_tools()).tools}
        assert {"add", "counter", "append", "crash"} <= names
        assert conn.is_repeatable("add") and not conn.is_repeatable("append")
        text = (await conn.read_resource("data://greeting")).contents[0]
        assert getattr(text, "text", None) == "hello from math"
        prompt = await conn.get_prompt("greet", {"who": "bo"})
        assert "bo" in str(prompt.messages[0].content)
        await connector.probe(conn)
        assert conn.handoff() is None  # a child process cannot move
    finally:
        await connector.close(conn)
    assert not conn.alive
    assert children() == before


async def test_stdio_crash_marks_the_connection_dead(connector: McpConnector) -> None:
    """The child exits mid-call: the non-idempotent call's outcome is unknown (not
    repeatable); the connection is dead; nothing is left behind."""
    before = children()
    conn = await _connect(connector, spec_of(stdio_connection("math")))
    with pytest.raises(OutcomeUnknown):
        await conn.call_tool("crash")
    assert not conn.alive
    with pytest.raises(NotDelivered):
        await conn.call_tool("add", {"a": 1, "b": 1})
    await connector.close(conn)
    assert children() == before


async def test_the_sdk_client_logs_no_whole_upstream_session_id(
    connector: McpConnector, http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's HTTP client logs the upstream's Mcp-Session-Id at INFO; only its first
    characters reach the log (at DEBUG the HTTP library logs whole response headers:
    docs/security.md says what DEBUG logs)."""
    caplog.set_level("INFO")
    conn = await _connect(connector, spec_of(http_server.connection()))
    try:
        handoff = connector.handoff(conn)
        assert handoff is not None
        session_id = handoff["session_id"]
        assert "Received session ID: " + session_id[:8] in caplog.text
        assert session_id not in caplog.text
    finally:
        await connector.close(conn)


async def test_streamable_http_calls_and_handoff_to_a_second_connection(
    connector: McpConnector, http_server: HttpServer
) -> None:
    """A second connection continues the first one's upstream session from its handoff:
    the stateful counter goes on and the server saw one session, not two."""
    spec = spec_of(http_server.connection())
    first = await _connect(connector, spec)
    try:
        assert (await first.call_tool("counter")).structured_content == {"result": 1}
        handoff = connector.handoff(first)
        assert handoff is not None and handoff["session_id"]
        assert '"name":"weather"' in handoff["initialize_result"]
        second = await _connect(connector, spec, resume=handoff)
        try:
            assert second.adopted
            assert (await second.call_tool("counter")).structured_content == {"result": 2}
            assert (await second.call_tool("sessions")).structured_content == {"result": 1}
            assert connector.handoff(second) == handoff
        finally:
            await connector.close(second)
    finally:
        await connector.close(first)


async def test_connections_continuing_one_session_can_have_calls_in_flight_at_once(
    http_server: HttpServer,
) -> None:
    """Processes that continue one upstream session from its handoff send their
    requests on it at the same time; the server tells the requests apart by their
    JSON-RPC ids, so a call of one is never answered (or failed) as another's. Here
    one call is held on the server while another connection continues the session."""
    # A call timeout well past the hold, so a loaded machine cannot time the held
    # call out.
    connector = McpConnector(call_timeout=30.0, connect_timeout=8.0)
    spec = spec_of(http_server.connection())
    first = await _connect(connector, spec)
    handoff = connector.handoff(first)
    second = await _connect(connector, spec, resume=handoff)
    third = await _connect(connector, spec, resume=handoff)
    try:
        # The server holds this call for a while after counting it; nothing waits on
        # the hold itself: the test only needs the call still in flight meanwhile.
        held = asyncio.create_task(second.call_tool("append", {"item": "x", "delay": 3.0}))

        async def held_in_flight() -> bool:
            return (await first.call_tool("appended")).structured_content == {"result": 1}

        await eventually(held_in_flight)
        served = await third.call_tool("whoami")
        assert not served.is_error and served.structured_content == {"result": "weather"}
        answer = await held
        assert not answer.is_error and answer.structured_content == {"result": 1}
        assert (await third.call_tool("sessions")).structured_content == {"result": 1}
    finally:
        for conn in (third, second, first):
            await connector.close(conn)


async def test_a_session_the_upstream_forgot_gets_a_new_handshake(
    connector: McpConnector, http_server: HttpServer
) -> None:
    """After a restart the old session id answers 404: connect does the handshake again."""
    spec = spec_of(http_server.connection())
    first = await _connect(connector, spec)
    handoff = connector.handoff(first)
    await connector.close(first)
    http_server.kill()
    http_server.start()
    again = await _connect(connector, spec, resume=handoff)
    try:
        assert not again.adopted
        new = connector.handoff(again)
        assert new is not None and handoff is not None
        assert new["session_id"] != handoff["session_id"]
        assert (await again.call_tool("counter")).structured_content == {"result": 1}
    finally:
        await connector.close(again)


async def test_http_server_killed_faults_are_classified(
    connector: McpConnector, http_server: HttpServer
) -> None:
    """A killed HTTP server: a read-only call fails as a dropped link (reconnect, counts);
    then the connection is gone and a new connect is refused (reconnect, counts)."""
    spec = spec_of(http_server.connection())
    conn = await _connect(connector, spec)
    http_server.kill()
    with pytest.raises(ConnectionDropped) as dropped:
        await conn.call_tool("add", {"a": 1, "b": 1})
    verdict = classify_mcp(dropped.value)
    assert verdict is not None and verdict.action is Action.RECONNECT
    assert verdict.counts_against_breaker
    assert not conn.alive
    await connector.close(conn)
    with pytest.raises(Exception) as refused:
        await _connect(connector, spec)
    verdict = classify_mcp(refused.value)
    assert verdict is not None and verdict.reason == "refused"


async def test_delivered_non_idempotent_call_is_outcome_unknown(
    connector: McpConnector, http_server: HttpServer
) -> None:
    """The server dies while a non-idempotent tool runs: OutcomeUnknown (fail, no retry)."""
    conn = await _connect(connector, spec_of(http_server.connection()))
    call = asyncio.create_task(conn.call_tool("append", {"item": "x", "delay": 30}))
    await asyncio.sleep(0)  # let it send; the server holds the answer for 30 s
    await eventually(_server_got_it(http_server), timeout=10)
    http_server.kill()
    with pytest.raises(OutcomeUnknown) as unknown:
        await call
    verdict = classify_mcp(unknown.value)
    assert verdict is not None and verdict.action is Action.FAIL
    await connector.close(conn)


def _server_got_it(server: HttpServer) -> Any:
    async def check() -> bool:
        # A second connection reads the shared count: the append has started.
        probe = await McpConnector(call_timeout=5, connect_timeout=5).connect(
            spec_of(server.connection(), "probe"), None
        )
        try:
            result = await probe.call_tool("appended")
            return result.structured_content == {"result": 1}
        finally:
            await probe.close(5.0)

    return check


async def test_bad_input_fails_fast_and_leaves_nothing(connector: McpConnector) -> None:
    """Unknown transport, relative URL, missing command/args/url: InvalidInput with
    the seed's texts; a missing program is StartFailed (fail fast), no child left."""
    cases = [
        ({"command": "x", "args": []}, "Missing 'transport'"),
        ({"transport": "carrier-pigeon"}, "Unsupported transport"),
        ({"transport": "websocket", "url": "ws://x"}, "WebSocket"),
        ({"transport": "streamable_http"}, "'url' parameter is required"),
        ({"transport": "streamable_http", "url": "/mcp"}, "absolute"),
        ({"transport": "stdio", "args": []}, "'command' parameter is required"),
        ({"transport": "stdio", "command": "python"}, "'args' parameter is required"),
    ]
    for connection, text in cases:
        with pytest.raises(InvalidInput, match=text):
            McpTarget.from_connection(connection)
    before = children()
    spec = spec_of({"transport": "stdio", "command": "/nonexistent/mcp-server", "args": []})
    started = time.monotonic()
    with pytest.raises(StartFailed) as failed:
        await _connect(connector, spec)
    assert time.monotonic() - started < connector.connect_timeout
    verdict = classify_mcp(failed.value)
    assert verdict is not None and verdict.action is Action.FAIL
    assert children() == before


async def test_a_server_that_never_answers_the_handshake_times_out(
    connector: McpConnector,
) -> None:
    """A stdio child and a TCP server that never answer: TimeoutError within the connect
    timeout, the child is stopped, nothing half-open stays."""
    quick = McpConnector(call_timeout=1.0, connect_timeout=1.5)
    before = children()
    with pytest.raises(TimeoutError, match="handshake"):
        await _connect(quick, spec_of(stdio_connection(mode="silent-stdio")))
    assert children() == before
    silent = HttpServer("silent", mode="silent").start()
    try:
        with pytest.raises(TimeoutError, match="handshake"):
            await _connect(quick, spec_of(silent.connection()))
    finally:
        silent.kill()


async def test_the_sse_transport_where_the_sdk_ships_it(connector: McpConnector) -> None:
    """The SDK's SSE client: a tool call and a ping; no handoff (not Streamable HTTP)."""
    server = HttpServer("legacy", mode="sse").start()
    try:
        conn = await _connect(connector, spec_of(server.connection()))
        try:
            result = await conn.call_tool("whoami")
            assert result.structured_content == {"result": "legacy"}
            await connector.probe(conn)
            assert connector.handoff(conn) is None
        finally:
            await connector.close(conn)
    finally:
        server.kill()


async def test_bearer_token_and_secret_headers_are_redacted(connector: McpConnector) -> None:
    """A bearer token, or every value of a JSON secret, is masked in texts."""
    token = SecretStr("tok-123")
    assert connector.redact("Bearer tok-123 failed", token) == "Bearer *** failed"
    headers = SecretStr('{"X-Api-Key": "k-456", "Authorization": "Bearer t-789"}')
    assert "k-456" not in connector.redact("k-456 and Bearer t-789", headers)
    assert "t-789" not in connector.redact("k-456 and Bearer t-789", headers)


@pytest.mark.parametrize("transport", ["streamable_http", "stdio"])
async def test_the_2026_revision_is_probed_with_server_discover(
    connector: McpConnector, http_server: HttpServer, transport: str
) -> None:
    """``mode: auto`` settles on the 2026-07-28 revision, which has no ``ping`` (the SDK
    server answers it "method not found"): the health probe is ``server/discover`` and
    passes; tools work; a stateless session has nothing to hand off."""
    connection = http_server.connection() if transport == "streamable_http" else stdio_connection()
    conn = await _connect(connector, spec_of({**connection, "mode": "auto"}))
    try:
        assert conn.revision == "2026-07-28" and conn.discovered
        await connector.probe(conn)
        with pytest.raises(MCPError, match="not found"):
            await conn.ping()
        result = await conn.call_tool("add", {"a": 2, "b": 3})
        assert result.structured_content == {"result": 5}
        await connector.probe(conn)
        assert connector.handoff(conn) is None
    finally:
        await connector.close(conn)


async def test_the_handshake_revision_stays_the_default_and_is_probed_with_ping(
    connector: McpConnector, http_server: HttpServer
) -> None:
    """Without ``mode`` the connection does the ``initialize`` handshake (a revision that
    still has ``ping``) and its session can be handed off."""
    conn = await _connect(connector, spec_of(http_server.connection()))
    try:
        assert conn.revision is not None and conn.revision < "2026-07-28"
        assert not conn.discovered
        await connector.probe(conn)
        assert connector.handoff(conn) is not None
    finally:
        await connector.close(conn)


async def test_auto_falls_back_to_the_handshake_for_an_older_server(
    connector: McpConnector,
) -> None:
    """``mode: auto`` on a server whose ``server/discover`` offers no 2026 revision: the
    connection does the ``initialize`` handshake, and the probe is ``ping``."""
    server = HttpServer("older", mode="http-legacy").start()
    try:
        conn = await _connect(connector, spec_of({**server.connection(), "mode": "auto"}))
        try:
            assert not conn.discovered and conn.revision is not None
            assert conn.revision < "2026-07-28"
            await connector.probe(conn)
            assert (await conn.call_tool("whoami")).structured_content == {"result": "older"}
        finally:
            await connector.close(conn)
    finally:
        server.kill()
