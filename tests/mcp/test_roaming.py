"""Roaming MCP sessions in one process: several `mcp_app` replicas on one real Redis,
the SDK's own client sending each request to the next replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from redis.asyncio.connection import AbstractConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionstore import RedisSettings, SessionStore, Settings, create_client
from sessionstore.mcp import _manager, mcp_app, mcp_session
from sessionstore.testing import LocalRedis
from tests.mcp.replicas import Replica, replicas, roaming_client
from tests.polling import eventually

HEADERS = {
    "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
    "Accept": "application/json, text/event-stream",
}
POST_HEADERS = {**HEADERS, "Content-Type": "application/json"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "bump"}}
INITIALIZE = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"'
    + LATEST_HANDSHAKE_VERSION.encode()
    + b'","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}'
)


def make_server() -> MCPServer:
    server = MCPServer("roaming-test")

    @server.tool()
    async def bump() -> int:
        """Increment the session's counter."""
        return await mcp_session().incr("n")

    @server.tool()
    async def echo() -> str:
        """Touch no state."""
        return "echo"

    @server.tool()
    async def remember(text: str) -> list[str]:
        """Append to the session's notes."""
        state = await mcp_session().mutate(lambda s: {**s, "notes": [*s.get("notes", []), text]})
        return list(state["notes"])

    return server


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix, shards=4)


@pytest.fixture
async def group(settings: Settings) -> AsyncIterator[list[Replica]]:
    async with replicas(2, make_server, settings) as started:
        yield started


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SessionStore]:
    assert settings.redis_url is not None
    client = create_client(RedisSettings.from_dsn(settings.redis_url))
    yield SessionStore(client, settings.session)
    await client.aclose()


async def value(client: object, name: str = "bump", **arguments: object) -> object:
    result = await client.call_tool(name, arguments)  # type: ignore[attr-defined]
    assert not result.is_error, result
    return result.structured_content["result"]


async def test_every_request_on_the_other_replica(group: list[Replica]) -> None:
    """Each request goes to the other replica than the one before: the counter is exact
    and the replica that did not open the session adopted it once."""
    async with roaming_client(group) as (client, rotating):
        counts = [await value(client) for _ in range(6)]
    assert counts == [1, 2, 3, 4, 5, 6]
    assert len(set(rotating.sent)) == 2
    opened = [r.manager.metrics.sessions_opened._value.get() for r in group]
    adopted = [r.manager.metrics.sessions_adopted._value.get() for r in group]
    assert sorted(opened) == [0, 1]
    assert adopted[opened.index(1)] == 0 and adopted[opened.index(0)] == 1


async def test_a_replica_adopts_once_under_concurrent_requests(group: list[Replica]) -> None:
    """Sixteen concurrent calls, half of them on the replica without a copy: it rebuilds
    the session exactly once, and the increments end exact."""
    async with roaming_client(group) as (client, _):
        results = await asyncio.gather(*(value(client) for _ in range(16)))
        notes = await value(client, "remember", text="x")
    assert sorted(results) == list(range(1, 17))  # type: ignore[type-var]
    assert notes == ["x"]
    assert sum(r.manager.metrics.sessions_adopted._value.get() for r in group) == 1


async def test_a_request_during_an_adoption_waits_for_the_copy(
    group: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that reaches a replica while it is still rebuilding the session's copy
    for another request (the copy's server task has not connected its transport yet)
    waits for that copy, rather than reaching the unconnected transport (a 500)."""
    connecting, connect = asyncio.Event(), asyncio.Event()
    serve_local = _manager.serve_local

    async def held(*args: Any, **kwargs: Any) -> None:
        connecting.set()
        await connect.wait()
        await serve_local(*args, **kwargs)

    opener, other = group
    async with httpx.AsyncClient(timeout=30) as http:
        opened = await http.post(opener.url, content=INITIALIZE, headers=POST_HEADERS)
        headers = {**POST_HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        monkeypatch.setattr(_manager, "serve_local", held)
        first = asyncio.create_task(http.post(other.url, json={**CALL, "id": 1}, headers=headers))
        await asyncio.wait_for(connecting.wait(), timeout=10)
        second = asyncio.create_task(http.post(other.url, json={**CALL, "id": 2}, headers=headers))
        lock = other.manager._adopt_lock

        async def queued_or_answered() -> bool:
            return second.done() or lock.statistics().tasks_waiting == 1

        await eventually(queued_or_answered, timeout=10)
        connect.set()
        answers = [await first, await second]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert other.manager.metrics.sessions_adopted._value.get() == 1


async def test_every_call_gives_its_lease_back(group: list[Replica], store: SessionStore) -> None:
    """The SDK's SSE response cancels its tasks as soon as its writer has handed over the
    last event (the SDK's client closes the response once it has read the result), which
    can be while the lease is being given back: the return finishes anyway, so after many
    calls of several clients, concurrent and one by one, no request is left in flight."""

    done, checked = asyncio.Barrier(5), asyncio.Event()

    async def calls() -> None:
        async with roaming_client(group) as (client, _):
            await asyncio.gather(*(value(client, "echo") for _ in range(16)))
            for _ in range(16):
                await value(client, "echo")
            await done.wait()
            await checked.wait()  # the sessions stay open until they were read

    clients = [asyncio.create_task(calls()) for _ in range(4)]
    await done.wait()
    ids = {sid for replica in group for sid in replica.manager._sessions}
    in_flight = [(await store.get(session_id)).active_requests for session_id in ids]
    checked.set()
    await asyncio.gather(*clients)
    assert in_flight == [0] * 4


async def test_idle_reaping_of_a_local_copy_is_invisible(settings: Settings) -> None:
    """The SDK reaps the idle local copy of the replica that holds no GET stream; the
    next calls on it rebuild the copy from the record and the client notices nothing."""
    async with replicas(2, make_server, settings, idle_timeout=0.3) as group:
        async with roaming_client(group) as (client, _):
            assert [await value(client) for _ in range(4)] == [1, 2, 3, 4]
            await _until(lambda: sum(r.manager.local_sessions for r in group) == 1 or None)
            before = sum(r.manager.metrics.sessions_adopted._value.get() for r in group)
            assert [await value(client) for _ in range(4)] == [5, 6, 7, 8]
        after = sum(r.manager.metrics.sessions_adopted._value.get() for r in group)
        reaped = sum(r.manager.metrics.local_dropped.labels("idle")._value.get() for r in group)
    assert after > before and reaped >= 1


async def _until(check: object, timeout: float = 10.0) -> None:
    async def probe() -> object:
        return check()  # type: ignore[operator]

    await eventually(probe, timeout=timeout, interval=0.05)


@pytest.mark.parametrize(
    ("session_id", "why"),
    [
        ("0123456789abcdef0123456789abcdef", "the SDK's own uuid hex ids"),
        ("1.AAAAAAAAAAAAAAAAAAAAAAAA", "a well-formed id never issued"),
        ("1.*{x}:AAAAAAAAAAAAAAAAAAA", "key-injection attempt"),
        ("9" * 5000, "oversized"),
    ],
)
async def test_foreign_and_malformed_session_ids_answer_404(
    group: list[Replica], session_id: str, why: str
) -> None:
    """Ids that lead to no session get the SDK's 404 JSON-RPC error, on every replica."""
    del why
    async with httpx.AsyncClient() as http:
        for replica in group:
            answer = await http.post(
                replica.url, json=CALL, headers={**HEADERS, "Mcp-Session-Id": session_id}
            )
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["message"] == "Session not found"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "Parse error: the body is not JSON"),
        (b'{"jsonrpc": "2.0", "id": 1}', 400, "Invalid JSON-RPC message"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', 400, "Bad Request: Missing session ID"),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}',
            400,
            "Invalid initialize params",
        ),
    ],
)
async def test_bad_opening_requests_create_nothing(
    group: list[Replica], store: SessionStore, body: bytes, status: int, message: str
) -> None:
    """A request without a session id that is not a valid initialize gets a JSON-RPC
    error and no session is created."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            group[0].url, content=body, headers={**HEADERS, "Content-Type": "application/json"}
        )
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"] == message
    assert (await store.counts()).active == 0


async def test_oversized_body_is_refused_before_anything(
    settings: Settings, store: SessionStore
) -> None:
    """A body over the limit gets 413 and creates nothing."""
    small = replicas(1, make_server, settings, max_request_body_size=1024)
    async with small as (replica,), httpx.AsyncClient() as http:
        answer = await http.post(
            replica.url,
            content=b'{"pad": "' + b"x" * 4096 + b'"}',
            headers={**HEADERS, "Content-Type": "application/json"},
        )
    assert answer.status_code == 413
    assert (await store.counts()).active == 0


async def test_delete_on_one_replica_drops_the_copy_on_the_other(group: list[Replica]) -> None:
    """Leaving the client sends DELETE to one replica; the other drops its local copy
    when the session event reaches it, and both answer 404 for the id."""
    async with roaming_client(group) as (client, _):
        await value(client)
        await value(client)
        assert all(r.manager.local_sessions == 1 for r in group)
        session_ids = list(group[0].manager._sessions)
    await _until(lambda: all(r.manager.local_sessions == 0 for r in group) or None)
    async with httpx.AsyncClient() as http:
        for replica in group:
            answer = await http.post(
                replica.url, json=CALL, headers={**HEADERS, "Mcp-Session-Id": session_ids[0]}
            )
            assert answer.status_code == 404


async def test_rotation_ends_the_mcp_session_everywhere(
    group: list[Replica], store: SessionStore
) -> None:
    """Rotating the session's id (as an operator would) ends it for the MCP client: every
    replica drops its copy and the next call is the 404 error."""
    async with roaming_client(group) as (client, _):
        await value(client)
        await value(client)
        (session_id,) = list(group[0].manager._sessions)
        await store.rotate(session_id)
        await _until(lambda: all(r.manager.local_sessions == 0 for r in group) or None)
        with pytest.raises(MCPError, match="Session not found"):
            await client.call_tool("bump", {})


async def test_mcp_session_outside_a_request_is_an_error() -> None:
    """mcp_session() outside a request served by mcp_app says so."""
    with pytest.raises(RuntimeError, match="only available while mcp_app serves"):
        mcp_session()


async def test_redis_down_answers_a_fast_503_and_recovers(tmp_path: Path) -> None:
    """With the session store's Redis stopped, a request for a live session gets 503 with
    Retry-After (bounded by the short Redis timeouts, never a hang); once Redis is back
    it is served."""
    local = LocalRedis(directory=str(tmp_path / "redis"), appendonly=True)
    local.start()
    settings = Settings(redis_url=local.url, key_prefix="down", shards=4)
    try:
        one = replicas(1, make_server, settings)
        async with one as (replica,), httpx.AsyncClient() as http:
            opened = await http.post(replica.url, content=INITIALIZE, headers=POST_HEADERS)
            session_id = opened.headers["mcp-session-id"]
            local.stop(remove=False)
            down = await http.post(
                replica.url, json=CALL, headers={**POST_HEADERS, "Mcp-Session-Id": session_id}
            )
            local.start()
            back = await http.post(
                replica.url, json=CALL, headers={**POST_HEADERS, "Mcp-Session-Id": session_id}
            )
    finally:
        local.stop()
    assert down.status_code == 503 and down.headers["retry-after"] == "1", down.text
    assert back.status_code == 200, back.text


class CallRoundTrips:
    """Socket writes to Redis (one per command or pipeline), except the event follower's
    XREAD, which runs in the background whatever the calls do; writes of nothing but SSE
    events (XADD) are counted apart (an event riding with a script counts as that script's
    round trip)."""

    def __init__(self) -> None:
        self.total = 0
        self.event_writes = 0

    def reset(self) -> None:
        self.total = self.event_writes = 0


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> CallRoundTrips:
    counter = CallRoundTrips()
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | bytearray) else b"".join(command)
        if b"XADD" in packed and b"EVALSHA" not in packed:
            counter.event_writes += 1
        elif b"XREAD" not in packed:
            counter.total += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return counter


async def test_round_trips_of_a_steady_state_tool_call(
    group: list[Replica], round_trips: CallRoundTrips
) -> None:
    """Once the session is known to a replica, a tool call that touches no state costs two
    round trips (take the lease and read the record; give it back, with the response's
    event write in the same round trip) and no event write of its own (the priming event
    is not written); an increment one more. The session-event follower's reads are not
    part of a call and are not counted."""
    async with roaming_client(group[:1]) as (client, _):
        await value(client, "echo")
        await value(client)
        # The client's GET stream opens in the background; wait until it is being served.
        opened = group[0].manager.metrics.streams_opened
        await _until(lambda: opened._value.get() >= 1 or None)
        # Background work (lease renewals, a stream's reconnect on a loaded machine) can
        # land in one window; the steady-state cost is the least of several calls.
        samples: dict[str, list[tuple[int, int]]] = {"echo": [], "bump": []}
        for _ in range(4):
            for tool in samples:
                round_trips.reset()
                await value(client, tool)
                samples[tool].append((round_trips.total, round_trips.event_writes))
        echo, events = min(samples["echo"])
        bump, _ = min(samples["bump"])
    assert (echo, bump, events) == (2, 3, 0)


class Tagging:
    """Middleware that marks every response it passes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-wrapped", b"1")]
            await send(message)

        await self.app(scope, receive, tagged)


async def test_requests_the_endpoint_does_not_take_go_through_starlette(
    settings: Settings,
) -> None:
    """MCP requests skip Starlette's middleware, but only those its router would hand the
    endpoint as they are: another method gets Starlette's 405, and once middleware is
    added to the app every MCP request passes through it."""
    wrapped_app = mcp_app(make_server(), settings)
    wrapped_app.add_middleware(Tagging)
    plain, wrapped = Replica(mcp_app(make_server(), settings)), Replica(wrapped_app)
    for replica in (plain, wrapped):
        await replica.start()
    try:
        async with httpx.AsyncClient() as http:
            put = await http.put(plain.url, content=b"{}", headers=POST_HEADERS)
            direct = await http.post(plain.url, content=INITIALIZE, headers=POST_HEADERS)
            through = await http.post(wrapped.url, content=INITIALIZE, headers=POST_HEADERS)
    finally:
        for replica in (plain, wrapped):
            await replica.stop()
    assert put.status_code == 405 and "POST" in put.headers["allow"], put.text
    assert direct.status_code == 200 and "x-wrapped" not in direct.headers, direct.text
    assert through.status_code == 200 and through.headers["x-wrapped"] == "1", through.text
