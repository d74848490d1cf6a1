"""The MCP server the MCP benchmark serves: one tool that touches no state, one that
increments a session attribute. ``plain_app`` is the SDK's own Streamable HTTP app
(sessions in process memory); ``roaming_app`` is the same server through `mcp_app`
(built when SESSIONSTORE_REDIS_URL is set, as on a replica started by the benchmark)."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from sessionstore import Settings
from sessionstore.mcp import mcp_app, mcp_session


def make_server() -> MCPServer:
    """The benchmark's server: ``echo`` (no state) and ``bump`` (one increment)."""
    server = MCPServer("bench", log_level="WARNING")

    @server.tool()
    async def echo(text: str) -> str:
        """Return `text`."""
        return text

    @server.tool()
    async def bump() -> int:
        """Increment the session's counter."""
        return await mcp_session().incr("n")

    return server


def plain_app() -> Starlette:
    """The SDK's own app: sessions live in this process only."""
    # A host outside the loopback names, so the SDK adds no DNS-rebinding allow-list.
    return make_server().streamable_http_app(host="bench")


def roaming_app(settings: Settings, *, resumable: bool = True) -> Starlette:
    """The same server with sessions in the store (and, if `resumable`, events in Redis)."""
    return mcp_app(make_server(), settings, resumable=resumable)


if os.environ.get("SESSIONSTORE_REDIS_URL"):
    app = roaming_app(Settings())
