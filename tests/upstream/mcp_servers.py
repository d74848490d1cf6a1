"""Real MCP servers for the upstream tests, written with the SDK's `MCPServer`.

Run as a child process: ``python -m tests.upstream.mcp_servers
stdio NAME`` (the stdio server) or ``... http NAME FD`` (Streamable HTTP
under uvicorn on the listening socket FD, bound and handed over by the parent;
``sse`` for the SSE transport; ``http-legacy`` for a server whose
``server/discover`` offers only handshake revisions, as older servers answer).
``... silent FD`` accepts TCP connections and never answers (a server that
never finishes the handshake); ``... silent-stdio`` reads stdin and never answers.

Tools:

- ``add(a, b)``: read-only (retried freely);
- ``whoami()``: the server's NAME (which server served a call);
- ``counter()``: per upstream session, not idempotent (proves one session);
- ``append(item)`` / ``appended()``: not idempotent, and its read-only count;
- ``sessions()``: how many distinct sessions called a tool here;
- ``header(name)``: a request header (HTTP) or environment variable (stdio);
- ``fail()``: a tool error (``is_error``), not a fault of the server;
- ``slow(seconds)``: answers late;
- ``crash()``: the process exits without answering.

Resource ``data://greeting``, prompt ``greet(name)``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import DiscoverResult, RequestParams, ServerCapabilities, ToolAnnotations
from mcp_types.version import LATEST_HANDSHAKE_VERSION

READ_ONLY = ToolAnnotations(read_only_hint=True)
NOT_IDEMPOTENT = ToolAnnotations(read_only_hint=False, idempotent_hint=False)


def build(name: str) -> MCPServer:  # noqa: C901  (one nested function per tool, no branches)
    """The test server called `name`."""
    server: MCPServer = MCPServer(name, instructions=f"test server {name}", log_level="WARNING")
    counters: dict[str, int] = {}
    seen: set[str] = set()
    items: list[str] = []

    def note(ctx: Context[Any, Any]) -> str:
        # The upstream session: its Mcp-Session-Id over HTTP; a stdio child has one.
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        key = str(headers.get("mcp-session-id")) if headers is not None else "stdio"
        seen.add(key)
        return key

    @server.tool(annotations=READ_ONLY)
    def add(a: int, b: int, ctx: Context[Any, Any]) -> int:
        """a + b."""
        note(ctx)
        return a + b

    @server.tool(annotations=READ_ONLY)
    def whoami(ctx: Context[Any, Any]) -> str:
        """The server's name."""
        note(ctx)
        return name

    @server.tool(annotations=NOT_IDEMPOTENT)
    def counter(ctx: Context[Any, Any]) -> int:
        """Count calls in this upstream session."""
        key = note(ctx)
        counters[key] = counters.get(key, 0) + 1
        return counters[key]

    @server.tool(annotations=NOT_IDEMPOTENT)
    async def append(item: str, ctx: Context[Any, Any], delay: float = 0.0) -> int:
        """Append `item` (after `delay` seconds); returns the count."""
        note(ctx)
        items.append(item)
        if delay:
            await asyncio.sleep(delay)
        return len(items)

    @server.tool(annotations=READ_ONLY)
    def appended(ctx: Context[Any, Any]) -> int:
        """How many items were appended."""
        note(ctx)
        return len(items)

    @server.tool(annotations=READ_ONLY)
    def sessions(ctx: Context[Any, Any]) -> int:
        """Distinct sessions that called a tool here."""
        note(ctx)
        return len(seen)

    @server.tool(annotations=READ_ONLY)
    def header(name: str, ctx: Context[Any, Any]) -> str:
        """The request's header `name` over HTTP, the environment variable `name` over stdio."""
        headers = getattr(ctx.request_context.request, "headers", None)
        if headers is None:
            return os.environ.get(name, "")
        return str(headers.get(name, ""))

    @server.tool(annotations=READ_ONLY)
    def fail() -> str:
        """Always a tool error."""
        raise ToolError("this tool always fails")

    @server.tool(annotations=READ_ONLY)
    async def slow(seconds: float) -> str:
        """Answer after `seconds`."""
        await asyncio.sleep(seconds)
        return "late"

    @server.tool(annotations=NOT_IDEMPOTENT)
    def crash() -> str:
        """Exit at once, without answering."""
        sys.stderr.flush()
        os._exit(3)

    @server.resource("data://greeting")
    def greeting() -> str:
        """A fixed text."""
        return f"hello from {name}"

    @server.prompt()
    def greet(who: str) -> str:
        """A greeting prompt."""
        return f"Say hello to {who}."

    return server


def handshake_only(server: MCPServer) -> None:
    """Make `server` answer ``server/discover`` with handshake revisions only."""

    async def discover(ctx: Any, params: RequestParams | None) -> DiscoverResult:
        return DiscoverResult(
            supported_versions=[LATEST_HANDSHAKE_VERSION], capabilities=ServerCapabilities()
        )

    server._lowlevel_server.add_request_handler("server/discover", RequestParams, discover)


def serve_http(name: str, fd: int, *, sse: bool = False, legacy: bool = False) -> None:
    """Streamable HTTP on the listening socket `fd` (uvicorn), path /mcp; or SSE on /sse."""
    import uvicorn

    server = build(name)
    if legacy:
        handshake_only(server)
    app = server.sse_app() if sse else server.streamable_http_app(json_response=True)
    # Not uvicorn's own `fd` option: it takes the descriptor for a Unix socket.
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def serve_silent(fd: int) -> None:
    """Accept TCP connections on the listening socket `fd` and never answer them."""
    listener = socket.socket(fileno=fd)
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)


def main(argv: list[str]) -> None:
    """Entry point (see the module docstring)."""
    mode = argv[0]
    if mode == "stdio":
        build(argv[1]).run("stdio")
    elif mode in ("http", "sse", "http-legacy"):
        serve_http(argv[1], int(argv[2]), sse=mode == "sse", legacy=mode == "http-legacy")
    elif mode == "silent":
        serve_silent(int(argv[1]))
    elif mode == "silent-stdio":
        while sys.stdin.readline():
            time.sleep(0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
