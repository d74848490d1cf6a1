"""An MCP server whose sessions roam: run this app on every replica behind any load balancer.

    SESSIONSTORE_REDIS_URL=redis://127.0.0.1:6379/0 \\
        uvicorn --app-dir examples mcp_notes:app --port 8001

Point an MCP client (Streamable HTTP) at ``http://<host>:<port>/mcp``, or run
``python examples/mcp_notes.py URL [URL...]``: one session whose calls go to
each URL in turn (the SDK's client, handshake mode), printing who served them.
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from pydantic import BaseModel

from sessionstore import Settings
from sessionstore.mcp import fleet_request_state_security, mcp_app, mcp_session

settings = Settings()
# Clients of the 2026-07-28 revision carry the server's sealed request state from one
# request to the next, whichever replica serves it: every replica must unseal what any
# other sealed, so the keys come from the fleet's secret (SESSIONSTORE_SECRET_KEY).
notes = MCPServer(
    "notes",
    log_level="WARNING",
    request_state_security=(
        fleet_request_state_security(settings, audience="notes") if settings.secret_key else None
    ),
)
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


@notes.tool()
async def countdown(steps: int, ctx: Context) -> str:
    """Report progress step by step; after step 2 close the SSE stream (the client
    resumes it, on any replica). Returns the replica that ran the tool."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps)
        if step == 2:
            await ctx.close_sse_stream()
        await anyio.sleep(0.2)  # simulated work, so later steps follow the reconnect
    return REPLICA


@notes.tool()
async def announce(ctx: Context) -> str:
    """Notify the client (on its standalone GET stream, wherever that is held) that the
    tool list changed; returns the replica that sent it."""
    await ctx.session.send_tool_list_changed()
    return REPLICA


class Name(BaseModel):
    """What `greet` asks the client for."""

    name: str


@notes.tool()
async def ask_name(ctx: Context) -> InputRequiredResult | str:
    """The 2026-07-28 revision's way of asking the client: round one returns the question
    with sealed state naming the replica that asked; the client's retry with the answer
    may reach any replica, which unseals that state and greets."""
    if ctx.input_responses is None:
        question = ElicitRequest(
            params=ElicitRequestFormParams(
                message="What is your name?",
                requested_schema={"type": "object", "properties": {"name": {"type": "string"}}},
            )
        )
        return InputRequiredResult(input_requests={"name": question}, request_state=REPLICA)
    answer = ctx.input_responses.get("name")
    name = getattr(answer, "content", None) or {}
    return f"asked on {ctx.request_state}, answered on {REPLICA}: hello {name.get('name')}"


@notes.tool()
async def greet(ctx: Context) -> str:
    """Ask the user's name (elicitation; the answer may reach any replica) and greet them."""
    answer = await ctx.elicit(message="What is your name?", schema=Name)
    if answer.action != "accept" or answer.data is None:
        return f"{REPLICA}: no name given"
    return f"{REPLICA}: hello {answer.data.name}"


async def call_in_turn(urls: list[str], calls: int = 6) -> None:
    """One client session whose every request goes to the next of `urls`."""
    import itertools

    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    ports = itertools.cycle([httpx2.URL(url).port for url in urls])

    class InTurn(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            request.url = request.url.copy_with(port=next(ports))
            return await super().handle_async_request(request)

    timeout = httpx2.Timeout(30, read=300)
    async with (
        httpx2.AsyncClient(transport=InTurn(), timeout=timeout) as http,
        Client(streamable_http_client(urls[0], http_client=http), mode="legacy") as client,
    ):
        for _ in range(calls):
            print((await client.call_tool("tick", {})).structured_content)


if __name__ == "__main__":
    import asyncio
    import sys

    asyncio.run(call_in_turn(sys.argv[1:]))
else:
    # Clients reconnect a closed stream after 200 ms (the SSE retry hint).
    app = mcp_app(notes, settings, retry_interval=200)
