"""MCP upstreams over the reference server's REST routes and `sessionstore upstreams`.

MCP upstreams are registered through the library (`McpServers`, here on the
replica's own pool); the routes list them, read their records and probe them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from sessionstore import SessionStore
from sessionstore.upstream import McpServers
from tests.upstream.mcp_processes import ROOT, HttpServer, stdio_connection
from tests.upstream.replicas import ADMIN_AUTH, Replica, owner, url

pytestmark = pytest.mark.standalone


@pytest.fixture
def weather() -> Iterator[HttpServer]:
    """The Streamable HTTP server ``weather``."""
    server = HttpServer("weather").start()
    yield server
    server.kill()


async def test_an_mcp_upstream_is_read_and_probed_over_rest(
    replica: Replica, weather: HttpServer, store: SessionStore
) -> None:
    """An HTTP MCP server with a sealed bearer token: a live probe over REST is healthy
    with a response time; the record shows the URL, the credential only as
    ``encrypted``, and the upstream session's resume state; the token is nowhere."""
    session = await store.create()
    servers = McpServers(
        replica.state.upstreams.pool, session.id, {"weather": weather.connection()}
    )
    await servers.register(secrets={"weather": SecretStr("tok-secret-1")})
    probed = await replica.http.get(
        url(session.id, "weather", "/health?probe=true"), headers=owner(session.id)
    )
    assert probed.status_code == 200, probed.text
    live = probed.json()
    assert live["healthy"] is True and live["source"] == "probe"
    assert live["response_time_ms"] > 0 and live["address"] == weather.url
    assert (live["host"], live["port"]) == ("127.0.0.1", weather.port)
    made = (await replica.http.get(url(session.id, "weather"), headers=owner(session.id))).json()
    assert made["mcp"]["url"] == weather.url and made["host"] is None
    assert made["credential"] == {"kind": "encrypted", "ref": None}
    assert made["breaker"] == f"mcp+plain:127.0.0.1:{weather.port}"
    raw = await store.redis.hget(store.keys.session(session.id).upstreams, "weather")
    assert "tok-secret-1" not in raw
    assert '"resume"' in raw


async def test_a_stdio_upstream_is_listed_and_shown_by_the_cli(
    replica: Replica, store: SessionStore
) -> None:
    """A stdio MCP upstream without a credential: listed over REST (credential ``none``)
    and shown by ``sessionstore upstreams show``."""
    session = await store.create()
    servers = McpServers(replica.state.upstreams.pool, session.id, {"math": stdio_connection()})
    await servers.register()
    listed = await replica.http.get(f"/sessions/{session.id}/upstreams", headers=ADMIN_AUTH)
    assert listed.status_code == 200, listed.text
    (only,) = listed.json()["upstreams"]
    assert only["name"] == "math" and only["credential"] == {"kind": "none", "ref": None}
    assert only["mcp"]["transport"] == "stdio"
    settings = replica.state.settings
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sessionstore", "upstreams", "show", session.id, "--json"],
        cwd=ROOT,
        env={
            "SESSIONSTORE_REDIS_URL": settings.redis_url or "",
            "SESSIONSTORE_KEY_PREFIX": settings.session.key_prefix,
            "SESSIONSTORE_SHARDS": str(settings.session.shards),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "math" in shown.stdout and "stdio" in shown.stdout
