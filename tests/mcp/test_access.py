"""Who may use an MCP session, and the store's limits on MCP requests: a session opened
under one credential answers 404 to another (on every replica, for DELETE too), and
a session at max_requests_per_session gets 429 with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionstore import Settings
from sessionstore.mcp import mcp_app
from tests.mcp.replicas import Replica
from tests.polling import eventually

HEADERS = {
    "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
RUNNING = asyncio.Event()
RELEASE = asyncio.Event()


def call(name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}}


def make_server() -> MCPServer:
    server = MCPServer("access-test")

    @server.tool()
    async def hold() -> str:
        """Run until the test releases it."""
        RUNNING.set()
        await RELEASE.wait()
        return "done"

    @server.tool()
    async def hello() -> str:
        """Answer at once."""
        return "hello"

    return server


class FakeBearerAuth:
    """Plays the SDK's bearer-auth middleware: the X-Test-User header's user becomes
    scope["user"] (an AuthenticatedUser)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            user = dict(scope["headers"]).get(b"x-test-user")
            if user:
                token = AccessToken(token="t", client_id="app", scopes=[], subject=user.decode())
                scope = {**scope, "user": AuthenticatedUser(token)}
        await self.app(scope, receive, send)


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url, key_prefix=key_prefix, shards=4, max_requests_per_session=1
    )


@pytest.fixture
async def group(settings: Settings) -> AsyncIterator[list[Replica]]:
    started = []
    for _ in range(2):
        app = mcp_app(make_server(), settings)
        started.append(Replica(app, front=FakeBearerAuth(app)))
    for replica in started:
        await replica.start()
    yield started
    for replica in started:
        await replica.stop()


async def opened(http: httpx.AsyncClient, url: str, user: str) -> str:
    answer = await http.post(url, json=INITIALIZE, headers={**HEADERS, "X-Test-User": user})
    assert answer.status_code == 200, answer.text
    return answer.headers["mcp-session-id"]


async def test_a_session_is_only_its_owners(group: list[Replica]) -> None:
    """Opened by alice: bob gets 404 for calls and DELETE on every replica and the
    session lives on; alice is served on every replica."""
    async with httpx.AsyncClient(timeout=10) as http:
        session_id = await opened(http, group[0].url, "alice")
        for replica in group:
            as_bob = {**HEADERS, "X-Test-User": "bob", "Mcp-Session-Id": session_id}
            refused = await http.post(replica.url, json=call("hello"), headers=as_bob)
            assert refused.status_code == 404
            assert (await http.delete(replica.url, headers=as_bob)).status_code == 404
            anonymous = {**HEADERS, "Mcp-Session-Id": session_id}
            assert (
                await http.post(replica.url, json=call("hello"), headers=anonymous)
            ).status_code == 404
        for replica in group:
            as_alice = {**HEADERS, "X-Test-User": "alice", "Mcp-Session-Id": session_id}
            served = await http.post(replica.url, json=call("hello"), headers=as_alice)
            assert served.status_code == 200 and "hello" in served.text


async def test_the_session_request_limit_applies_to_mcp_requests(group: list[Replica]) -> None:
    """With max_requests_per_session=1, a second call while one runs gets 429 with
    Retry-After from the other replica; once the first ends, calls are served again."""
    RUNNING.clear()
    RELEASE.clear()
    async with httpx.AsyncClient(timeout=30) as http:
        session_id = await opened(http, group[0].url, "alice")
        headers = {**HEADERS, "X-Test-User": "alice", "Mcp-Session-Id": session_id}
        first = asyncio.create_task(http.post(group[0].url, json=call("hold"), headers=headers))

        async def running() -> bool:
            return RUNNING.is_set()

        await eventually(running, timeout=10)
        second = await http.post(group[1].url, json=call("hello"), headers=headers)
        RELEASE.set()
        assert (await first).status_code == 200
        after = await http.post(group[1].url, json=call("hello"), headers=headers)
    assert second.status_code == 429 and second.headers["retry-after"] == "1", second.text
    assert after.status_code == 200
