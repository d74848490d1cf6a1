"""The MCP test servers' process helper: whatever answers on a server's port is that
server, even when another process holds the port it drew."""

from __future__ import annotations

import socket

import pytest

from sessionstore.upstream import McpTarget, UpstreamSpec
from sessionstore.upstream.mcp import McpConnector
from tests.upstream.mcp_processes import HttpServer

pytestmark = pytest.mark.standalone


async def test_a_drawn_port_held_elsewhere_is_not_mistaken_for_the_server() -> None:
    """Another process's listener on the drawn port (as another test run may hold it):
    the server starts on a port of its own and answers as itself; killed, its port
    refuses connections; restarted, it is back on the same port."""
    foreign = socket.create_server(("127.0.0.1", 0))
    server = HttpServer("weather")
    server.port = foreign.getsockname()[1]
    connector = McpConnector(call_timeout=5.0, connect_timeout=8.0)
    try:
        server.start()
        assert server.port != foreign.getsockname()[1]
        target = McpTarget.from_connection(server.connection())
        conn = await connector.connect(UpstreamSpec(name="w", kind="mcp", mcp=target), None)
        try:
            assert (await conn.call_tool("whoami")).structured_content == {"result": "weather"}
        finally:
            await connector.close(conn)
        port = server.port
        server.kill()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        server.start()
        assert server.port == port
    finally:
        server.kill()
        foreign.close()
