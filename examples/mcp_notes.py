"""An MCP server whose sessions roam: run this app on every replica behind any load balancer.

    SESSIONSTORE_REDIS_URL=redis://127.0.0.1:6379/0 \\
        uvicorn --app-dir examples mcp_notes:app --port 8001

Point an MCP client (Streamable HTTP) at ``http://<host>:<port>/mcp``.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

from sessionstore import Settings
from sessionstore.mcp import mcp_app, mcp_session

notes = MCPServer("notes")
#: Which replica answered (the fleet tests check requests really moved).
REPLICA = os.environ.get("MCP_REPLICA_NAME", str(os.getpid()))


@notes.tool()
async def increment() -> int:
    """Add one to this session's counter and return it (shared by every replica)."""
    return await mcp_session().incr("counter")


@notes.tool()
async def tick() -> dict[str, object]:
    """Add one to the counter; returns it with the replica that served the call and the session."""
    session = mcp_session()
    return {"counter": await session.incr("counter"), "replica": REPLICA, "session": session.id}


@notes.tool()
async def add_note(text: str) -> int:
    """Append a note to this session's notes; returns how many there are."""
    state = await mcp_session().mutate(lambda s: {**s, "notes": [*s.get("notes", []), text]})
    return len(state["notes"])


app = mcp_app(notes, Settings())
