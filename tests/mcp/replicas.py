"""In-process MCP replicas for tests: `mcp_app` apps on uvicorn servers in this event loop,
sharing one Redis, and an SDK client whose requests go to each replica in turn."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette

from sessionstore import Settings
from sessionstore.mcp import RoamingSessionManager, mcp_app
from tests.serving import Uvicorn


class Replica(Uvicorn):
    """One `mcp_app` served by uvicorn on 127.0.0.1 (on a port the kernel chose)."""

    def __init__(self, app: Starlette, *, front: Any = None) -> None:
        """`front`: an ASGI app wrapping `app` to serve instead (e.g. an auth layer)."""
        super().__init__(front or app)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def manager(self) -> RoamingSessionManager:
        manager = self.app.state.mcp_manager
        assert isinstance(manager, RoamingSessionManager)
        return manager


@asynccontextmanager
async def replicas(
    count: int, make_server: Callable[[], Any], settings: Settings, **options: Any
) -> AsyncIterator[list[Replica]]:
    """`count` replicas of the server `make_server` builds, started and stopped around the block."""
    started = [Replica(mcp_app(make_server(), settings, **options)) for _ in range(count)]
    try:
        for replica in started:
            await replica.start()
        yield started
    finally:
        for replica in started:
            await replica.stop()


class Rotating(httpx2.AsyncBaseTransport):
    """Sends each request to the next replica in turn (round robin, no stickiness); a
    stream resumed with Last-Event-ID, and a client's answer to a server-initiated
    request, always go to another replica than the last request POST."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = itertools.cycle(ports)
        self._inner = httpx2.AsyncHTTPTransport()
        #: The port each request went to, in order.
        self.sent: list[int] = []
        #: (port of the last POST, port of the resume) for every resumed stream.
        self.resumes: list[tuple[int, int]] = []
        #: (port of the last request POST, port of the answer) for every client answer.
        self.answers: list[tuple[int, int]] = []
        self._last_post = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._ports)
        if request.method == "POST" and b'"method"' not in request.content:
            while port == self._last_post and len(set(self.sent)) > 1:
                port = next(self._ports)
            self.answers.append((self._last_post, port))
        elif request.method == "POST":
            self._last_post = port
        elif "last-event-id" in request.headers:
            while port == self._last_post and len(set(self.sent)) > 1:
                port = next(self._ports)
            self.resumes.append((self._last_post, port))
        self.sent.append(port)
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def roaming_client(
    group: list[Replica], **options: Any
) -> AsyncIterator[tuple[Client, Rotating]]:
    """An SDK client (handshake mode, entered) whose every request goes to the next replica."""
    rotating = Rotating([r.port for r in group])
    async with httpx2.AsyncClient(transport=rotating, timeout=httpx2.Timeout(30, read=300)) as http:
        transport = streamable_http_client(group[0].url, http_client=http)
        async with Client(transport, **{"mode": "legacy", **options}) as client:
            yield client, rotating
