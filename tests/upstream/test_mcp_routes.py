"""MCP upstreams over the reference server's REST routes and `sessionstore upstreams`.

MCP upstreams are registered through the library (`McpServers`, on the
replica's own pool) or through ``PUT /sessions/{id}/upstreams/{name}`` (an
MCP body: a URL with a sealed bearer token or headers, or, with the admin
token and an allowed command, a command); the routes list them, read their
records and probe them, the CLI shows them and ``/session-health`` counts them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from sessionstore import SessionStore
from sessionstore.upstream import McpServers, UpstreamPool
from tests.upstream.mcp_processes import MODULE, ROOT, HttpServer, children, stdio_connection
from tests.upstream.replicas import (
    ADMIN_AUTH,
    HEALTH_AUTH,
    SERVICE,
    SERVICE_AUTH,
    Replica,
    owner,
    replica_settings,
    running,
    samples,
    url,
)

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
    shown = await _cli_show(replica, session.id)
    assert shown.returncode == 0, shown.stderr
    assert "math" in shown.stdout and "stdio" in shown.stdout


async def _cli_show(replica: Replica, session_id: str) -> subprocess.CompletedProcess[str]:
    """``sessionstore upstreams show SESSION --json`` on the replica's Redis."""
    settings = replica.state.settings
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sessionstore", "upstreams", "show", session_id, "--json"],
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


TOKEN = "bearer-secret-7f3a"
HEADER_SECRET = "header-secret-91c2"
ENV_SECRET = "env-secret-5d4e"


async def _tool(pool: UpstreamPool, session_id: str, upstream: str, tool: str, **args: Any) -> Any:
    """One tool call through the replica's pool; the tool's structured result."""
    served = await pool.run(session_id, upstream, lambda c: c.call_tool(tool, args))
    return served.value.structured_content["result"]


async def test_an_http_mcp_server_is_registered_over_rest_with_a_sealed_credential(
    replica: Replica, weather: HttpServer, store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The session's own client registers an MCP server by URL with a bearer token and a
    secret header, verified first: the record starts connected with a round trip; the
    upstream receives both; neither is in the answer, the record in Redis, the CLI's
    output or a log line; a live probe is healthy; ``/session-health`` and ``/metrics``
    count it."""
    caplog.set_level("DEBUG")
    session = await store.create()
    registration = {
        "kind": "mcp",
        "transport": "streamable_http",
        "url": weather.url,
        "bearer_token": TOKEN,
        "headers": {"X-Api-Key": HEADER_SECRET},
    }
    made = await replica.http.put(
        url(session.id, "weather", "?verify=true"), json=registration, headers=owner(session.id)
    )
    assert made.status_code == 200, made.text
    out = made.json()
    assert out["kind"] == "mcp" and out["mcp"]["url"] == weather.url
    assert out["state"] == "connected" and out["response_time_ms"] > 0
    assert out["credential"] == {"kind": "encrypted", "ref": None}
    assert out["breaker"] == f"mcp+plain:127.0.0.1:{weather.port}"
    pool = replica.state.upstreams.pool
    assert await _tool(pool, session.id, "weather", "header", name="x-api-key") == HEADER_SECRET
    assert await _tool(pool, session.id, "weather", "header", name="authorization") == (
        f"Bearer {TOKEN}"
    )
    probed = await replica.http.get(
        url(session.id, "weather", "/health?probe=true"), headers=owner(session.id)
    )
    assert probed.status_code == 200, probed.text
    assert probed.json()["healthy"] is True and probed.json()["response_time_ms"] > 0
    health = (await replica.http.get("/session-health", headers=HEALTH_AUTH)).json()
    assert health["upstreams"]["replica"]["open_sockets"] == 1
    assert health["upstreams"]["fleet"]["registered"] == 1
    seen = samples((await replica.http.get("/metrics")).text)
    assert seen[("sessionstore_upstream_registrations_total", (("change", "registered"),))] == 1
    assert seen[("sessionstore_upstream_pool_sockets_open", ())] == 1
    assert seen[("sessionstore_upstream_pool_connections", (("state", "connected"),))] == 1
    shown = await _cli_show(replica, session.id)
    assert shown.returncode == 0, shown.stderr
    assert weather.url in shown.stdout
    raw = await store.redis.hget(store.keys.session(session.id).upstreams, "weather")
    listed = await replica.http.get(f"/sessions/{session.id}/upstreams", headers=ADMIN_AUTH)
    seen = [made.text, probed.text, listed.text, shown.stdout, raw, caplog.text]
    for text in seen:
        assert TOKEN not in text and HEADER_SECRET not in text


async def test_a_2026_revision_server_registered_over_rest_is_probed_with_discover(
    replica: Replica, weather: HttpServer, store: SessionStore
) -> None:
    """``mode: auto`` over REST: the connection reaches the 2026-07-28 revision (no
    ``ping`` there); the verify step and live probes pass by ``server/discover``."""
    session = await store.create()
    registration = {"kind": "mcp", "transport": "streamable_http", "url": weather.url,
                    "mode": "auto"}  # fmt: skip
    made = await replica.http.put(
        url(session.id, "modern", "?verify=true"), json=registration, headers=owner(session.id)
    )
    assert made.status_code == 200, made.text
    assert made.json()["state"] == "connected" and made.json()["mcp"]["mode"] == "auto"
    probed = await replica.http.get(
        url(session.id, "modern", "/health?probe=true"), headers=owner(session.id)
    )
    assert probed.json()["healthy"] is True, probed.text
    entry = replica.state.upstreams.pool.connections.entry(session.id, "modern")
    assert getattr(entry.connection, "discovered", False) is True
    assert made.json()["credential"] == {"kind": "none", "ref": None}


@pytest.fixture
async def commands_replica(
    store: SessionStore, redis_url: str, secret_key: str
) -> AsyncIterator[Replica]:
    """A replica whose stdio MCP upstreams may run this Python (and nothing else)."""
    settings = replica_settings(
        store,
        redis_url,
        secret_key,
        upstream_allowed_commands=f"/bin/true, {sys.executable}",
        service_tokens=SecretStr(SERVICE),
    )
    async with running(settings) as served:
        yield served


def _stdio_body(**fields: Any) -> dict[str, Any]:
    connection = stdio_connection("math")
    return {
        "kind": "mcp",
        "transport": "stdio",
        "command": connection["command"],
        "args": connection["args"],
        "cwd": connection["cwd"],
        **fields,
    }


async def test_a_stdio_server_needs_the_admin_token_and_an_allowed_command(
    commands_replica: Replica, replica: Replica, store: SessionStore
) -> None:
    """A command runs a program on the fleet: the session's own client and a service get
    403; without ``SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS`` or for a command it does not
    list, the operator gets 422; an allowed command that speaks no MCP fails verification
    (503); nothing is stored by any of them. With the admin token
    and an allowed command: verified, the secret environment reaches the child and is
    never shown, health probes it, and removal leaves no child process."""
    session = await store.create()
    body = _stdio_body(secret_env={"MATH_TOKEN": ENV_SECRET}, env={"MATH_MODE": "plain"})
    where = url(session.id, "math", "?verify=true")
    for served, headers, status in [
        (commands_replica, owner(session.id), 403),
        (commands_replica, SERVICE_AUTH, 403),
        (replica, ADMIN_AUTH, 422),
    ]:
        refused = await served.http.put(where, json=body, headers=headers)
        assert refused.status_code == status, refused.text
        assert ENV_SECRET not in refused.text
    other = await commands_replica.http.put(
        where, json=_stdio_body(command="/bin/sh", args=["-c", "id"]), headers=ADMIN_AUTH
    )
    assert other.status_code == 422 and "not allowed" in other.text
    mute = await commands_replica.http.put(
        where, json=_stdio_body(command="/bin/true", args=[]), headers=ADMIN_AUTH
    )
    assert mute.status_code == 503, mute.text  # allowed, but it exits without a handshake
    assert await store.redis.hlen(store.keys.session(session.id).upstreams) == 0
    before = children(MODULE)
    made = await commands_replica.http.put(where, json=body, headers=ADMIN_AUTH)
    assert made.status_code == 200, made.text
    out = made.json()
    assert out["state"] == "connected" and out["credential"]["kind"] == "encrypted"
    assert out["mcp"]["transport"] == "stdio" and out["mcp"]["env"] == {"MATH_MODE": "plain"}
    pool = commands_replica.state.upstreams.pool
    assert await _tool(pool, session.id, "math", "header", name="MATH_TOKEN") == ENV_SECRET
    assert await _tool(pool, session.id, "math", "header", name="MATH_MODE") == "plain"
    probed = await commands_replica.http.get(
        url(session.id, "math", "/health?probe=true"), headers=owner(session.id)
    )
    assert probed.json()["healthy"] is True, probed.text
    raw = await store.redis.hget(store.keys.session(session.id).upstreams, "math")
    assert ENV_SECRET not in raw and ENV_SECRET not in made.text
    removed = await commands_replica.http.delete(url(session.id, "math"), headers=ADMIN_AUTH)
    assert removed.status_code == 204
    assert children(MODULE) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "/mcp"}, "url"),
        ({"url": "http://example.com/mcp"}, "not allowed"),
        ({"url": "http://127.0.0.1:99999/mcp"}, "url"),
        ({"transport": "websocket"}, "transport"),
        ({"host": "127.0.0.1"}, "host"),
        ({"credential_ref": "env:X"}, "credential_ref"),
        ({"headers": {"Mcp-Session-Id": HEADER_SECRET}}, "mcp_http"),
        ({"headers": {"X-Key": HEADER_SECRET + "\r\nX-Evil: 1"}}, "mcp_http"),
        ({"mode": "2026-07-28"}, "mode"),
    ],
)
async def test_a_bad_mcp_body_is_refused_and_stores_nothing(
    replica: Replica, store: SessionStore, change: dict[str, Any], field: str
) -> None:
    """A relative URL, a host not allowed, a bad port, an unknown transport, IMAP fields,
    a token beside a reference, a header the transport owns or one that would split a
    line, an unknown mode: 4xx naming the field, no secret echoed, nothing stored."""
    session = await store.create()
    body = {"kind": "mcp", "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp",
            "bearer_token": TOKEN, **change}  # fmt: skip
    refused = await replica.http.put(url(session.id, "x"), json=body, headers=ADMIN_AUTH)
    assert refused.status_code == 422, refused.text
    assert field in refused.text
    assert TOKEN not in refused.text and HEADER_SECRET not in refused.text
    assert await store.redis.hlen(store.keys.session(session.id).upstreams) == 0
