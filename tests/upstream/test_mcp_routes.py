"""MCP upstreams over the reference server's REST routes and `sessionstore upstreams`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sessionstore import SessionStore
from tests.upstream.mcp_processes import ROOT, HttpServer, stdio_connection
from tests.upstream.replicas import ADMIN_AUTH, Replica, owner, url

pytestmark = pytest.mark.standalone


@pytest.fixture
def weather() -> Iterator[HttpServer]:
    """The Streamable HTTP server ``weather``."""
    server = HttpServer("weather").start()
    yield server
    server.kill()


async def test_register_probe_and_read_an_mcp_upstream_over_rest(
    replica: Replica, weather: HttpServer, store: SessionStore
) -> None:
    """The session's own client registers an HTTP MCP server with a sealed bearer token;
    a live probe is healthy with a response time; the record shows the URL, the
    credential only as ``encrypted``, and the upstream session's resume state."""
    session = await store.create()
    body = {"kind": "mcp", "mcp": weather.connection(), "secret": "tok-secret-1"}
    put = await replica.http.put(url(session.id, "weather"), json=body, headers=owner(session.id))
    assert put.status_code == 200, put.text
    made = put.json()
    assert made["mcp"]["url"] == weather.url and made["host"] is None
    assert made["credential"] == {"kind": "encrypted", "ref": None}
    assert made["breaker"] == f"mcp+plain:127.0.0.1:{weather.port}"
    probed = await replica.http.get(
        url(session.id, "weather", "/health?probe=true"), headers=owner(session.id)
    )
    assert probed.status_code == 200, probed.text
    live = probed.json()
    assert live["healthy"] is True and live["source"] == "probe"
    assert live["response_time_ms"] > 0 and live["address"] == weather.url
    assert (live["host"], live["port"]) == ("127.0.0.1", weather.port)
    raw = await store.redis.hget(store.keys.session(session.id).upstreams, "weather")
    assert "tok-secret-1" not in raw and '"resume"' in raw
    listed = (await replica.http.get(url(session.id, "")[:-1], headers=owner(session.id))).json()
    assert [u["name"] for u in listed["upstreams"]] == ["weather"]


async def test_a_stdio_upstream_needs_the_admin_token(
    replica: Replica, store: SessionStore
) -> None:
    """A stdio MCP upstream runs a command on the server: the session's own client gets
    403, the admin token may register it; bad input is a clear 422 that stores nothing."""
    session = await store.create()
    body = {"kind": "mcp", "mcp": stdio_connection("math")}
    refused = await replica.http.put(url(session.id, "math"), json=body, headers=owner(session.id))
    assert refused.status_code == 403 and "admin token" in refused.text
    bad = {"kind": "mcp", "mcp": {"transport": "streamable_http", "url": "/relative"}}
    rejected = await replica.http.put(url(session.id, "x"), json=bad, headers=ADMIN_AUTH)
    assert rejected.status_code == 422
    assert await store.redis.exists(store.keys.session(session.id).upstreams) == 0
    made = await replica.http.put(url(session.id, "math"), json=body, headers=ADMIN_AUTH)
    assert made.status_code == 200, made.text
    assert made.json()["credential"] == {"kind": "none", "ref": None}
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sessionstore", "upstreams", "show", session.id, "--json"],
        cwd=ROOT,
        env={
            "SESSIONSTORE_REDIS_URL": replica.state.settings.redis_url or "",
            "SESSIONSTORE_KEY_PREFIX": replica.state.settings.session.key_prefix,
            "SESSIONSTORE_SHARDS": str(replica.state.settings.session.shards),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "math" in shown.stdout and "mcp" in json.dumps(shown.stdout)
