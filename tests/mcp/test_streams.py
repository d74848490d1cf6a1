"""SSE streams across replicas, in one process on one real Redis: a request's stream
closed by its tool resumes on another replica with every message once and in order
(including those produced after the reconnect), the standalone GET stream carries
notifications produced on another replica, and foreign or malformed Last-Event-IDs
replay nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ElicitRequestParams, ElicitResult
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from pydantic import BaseModel

from sessionstore import Settings
from sessionstore.mcp import mcp_session
from tests.mcp.replicas import Replica, replicas, roaming_client
from tests.polling import eventually

#: The replicas of the running test, for tools that wait on what the fleet saw.
FLEET: list[Replica] = []


def resumed_anywhere() -> float:
    return sum(r.manager.metrics.streams_resumed._value.get() for r in FLEET)


class Name(BaseModel):
    name: str


def make_server() -> MCPServer:
    server = MCPServer("streams-test")

    @server.tool()
    async def countdown(steps: int, ctx: Context) -> int:
        """Report progress; close the stream after step 2 and go on once the client has
        resumed it (so the later steps are produced after the reconnect)."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps)
            if step == 2:
                before = resumed_anywhere()
                await ctx.close_sse_stream()
                await eventually(_resumed_since(before), timeout=30, interval=0.02)
        return steps

    @server.tool()
    async def ask(ctx: Context) -> str:
        """Ask the client for a name (elicitation) and greet it."""
        answer = await ctx.elicit(message="Your name?", schema=Name)
        assert answer.action == "accept" and answer.data is not None
        return f"hello {answer.data.name}"

    @server.tool()
    async def announce(ctx: Context) -> str:
        """Send a list-changed notification on the session's standalone stream."""
        await ctx.session.send_tool_list_changed()
        return mcp_session().id

    return server


def _resumed_since(before: float) -> object:
    async def check() -> bool:
        return resumed_anywhere() > before

    return check


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix, shards=4)


@pytest.fixture
async def group(settings: Settings) -> AsyncIterator[list[Replica]]:
    async with replicas(2, make_server, settings, retry_interval=50) as started:
        FLEET[:] = started
        yield started
        FLEET.clear()


async def test_a_closed_stream_resumes_on_another_replica_exactly_once_in_order(
    group: list[Replica],
) -> None:
    """The tool closes its SSE stream after step 2; the client resumes with Last-Event-ID
    on the other replica and gets steps 1..5 once each, in order, and the result, though
    steps 3..5 were produced after it reconnected."""
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with roaming_client(group) as (client, rotating):
        result = await client.call_tool("countdown", {"steps": 5}, progress_callback=on_progress)
    assert not result.is_error, result
    assert result.structured_content == {"result": 5}
    assert progress == [1, 2, 3, 4, 5]
    assert rotating.resumes and all(post != resume for post, resume in rotating.resumes)
    assert sum(r.manager.metrics.events_replayed._value.get() for r in group) >= 4


async def test_foreign_and_malformed_last_event_ids_get_400_and_replay_nothing(
    group: list[Replica],
) -> None:
    """A GET with a Last-Event-ID of another session, or a malformed one, gets 400 and
    no event is replayed."""
    async with roaming_client(group) as (mine, _), roaming_client(group) as (theirs, _):
        own = (await mine.call_tool("announce", {})).structured_content["result"]
        other = (await theirs.call_tool("announce", {})).structured_content["result"]
        theirs_event = await _some_event_id(group, other)
        ids = [own]
        replayed_before = sum(r.manager.metrics.events_replayed._value.get() for r in group)
        async with httpx.AsyncClient() as http:
            for bad in (theirs_event, "not-an-event", "x" * 3000):
                answer = await http.get(
                    group[1].url,
                    headers={
                        "Mcp-Session-Id": ids[0],
                        "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
                        "Accept": "text/event-stream",
                        "Last-Event-ID": bad,
                    },
                )
                assert answer.status_code == 400, answer.text
                assert "not an event of this session" in answer.json()["error"]["message"]
        replayed_after = sum(r.manager.metrics.events_replayed._value.get() for r in group)
    assert replayed_after == replayed_before


async def _some_event_id(group: list[Replica], session_id: str) -> str:
    """A real event id of `session_id` (written through a replica's copy of it)."""
    local = next(
        r.manager._sessions[session_id] for r in group if session_id in r.manager._sessions
    )
    assert local.events is not None
    return await local.events.store_event("_GET_stream", None)


async def test_a_notification_reaches_the_get_stream_held_by_another_replica(
    group: list[Replica],
) -> None:
    """The client's standalone GET stream is held by one replica; a tool running on the
    other sends a notification, and the client receives it."""
    seen: list[str] = []

    async def on_message(message: object) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method is not None:
            seen.append(str(method))

    async with roaming_client(group, message_handler=on_message) as (client, _):
        await eventually(_stream_open(group), timeout=10)
        for _ in range(2):  # one of the two calls runs on the replica without the stream
            await client.call_tool("announce", {})

        async def arrived() -> bool:
            return seen.count("notifications/tools/list_changed") == 2

        await eventually(arrived, timeout=10)


def _stream_open(group: list[Replica]) -> object:
    async def check() -> bool:
        return sum(r.manager.metrics.streams_opened._value.get() for r in group) >= 1

    return check


async def test_an_elicitation_answered_through_another_replica(group: list[Replica]) -> None:
    """A tool on one replica asks the client (elicitation); the client's answer lands on
    the other replica, is relayed through Redis, and the tool finishes with it."""

    async def answer(context: object, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "ada"})

    async with roaming_client(group, elicitation_callback=answer) as (client, rotating):
        results = [await client.call_tool("ask", {}) for _ in range(2)]
    assert [r.structured_content for r in results] == [{"result": "hello ada"}] * 2
    assert len(rotating.answers) == 2
    assert all(post != landed for post, landed in rotating.answers)
    assert sum(r.manager.metrics.answers_relayed._value.get() for r in group) == 2
