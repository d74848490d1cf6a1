"""An MCP upstream down, then back, seen by three processes: the fleet breaker opens,
calls fall back, reconnect jobs back off; once it is back the breaker closes and calls
return to the primary. Everything is real: SDK servers under uvicorn, Redis, the
breaker registries, the fleet's arq WorkerSettings in burst mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import create_pool

from sessionstore import SessionStore
from sessionstore.breaker import BreakerAdmin, BreakerRegistry, BreakerState
from sessionstore.upstream import (
    ArqReconnects,
    BreakerGates,
    McpServers,
    UpstreamPool,
    UpstreamState,
    credentials_for,
)
from sessionstore.upstream.mcp import McpConnector
from tests.polling import eventually
from tests.upstream.conftest import RunWorker, fleet_settings
from tests.upstream.mcp_processes import ROOT, HttpServer
from workers.settings import build_worker_settings

pytestmark = [
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
    pytest.mark.slow,
    pytest.mark.standalone,
]

BREAKER = {
    "breaker_minimum_calls": 2,
    "breaker_failure_rate_threshold": 0.5,
    "breaker_open_duration": timedelta(milliseconds=500),
    "breaker_half_open_probes": 1,
    "breaker_record_flush_interval": timedelta(0),
}


async def _other_replica(
    fields: dict[str, Any], session_id: str, servers: dict[str, Any], *, tool: str = "whoami"
) -> dict[str, Any]:
    """One call of `tool` on ``weather`` (falling back to ``backup`` if it is a server)
    from another process: its JSON reply (see `tests.upstream.mcp_replica`) and, under
    ``log``, what it wrote to stderr."""
    argv = [
        json.dumps(fields, default=str),
        session_id,
        json.dumps(servers),
        json.dumps({"weather": ["backup"]} if "backup" in servers else {}),
        "weather",
        tool,
    ]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.upstream.mcp_replica", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reply: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # What the replica logged (its warnings say why a call was not served) shows
    # beside its reply when an assertion on the reply fails.
    reply["log"] = done.stderr[-2000:]
    return reply


async def test_breaker_opens_for_three_processes_jobs_back_off_and_calls_return(
    store: SessionStore, redis_url: str, secret_key: str, run_fleet_worker: RunWorker
) -> None:
    """Down: this replica falls back and trips the breaker; two other processes are
    refused by it at once and fall back too; the job defers while open and its
    half-open probe fails. Back: the job's probe closes the breaker and every
    process's calls are the primary's again."""
    settings = fleet_settings(store, redis_url, secret_key, **BREAKER)
    weather, backup = HttpServer("weather").start(), HttpServer("backup").start()
    fields = {
        "redis_url": redis_url,
        "key_prefix": settings.session.key_prefix,
        "shards": settings.session.shards,
        "secret_key": secret_key,
        "upstream_call_timeout": 5,
        **{k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in BREAKER.items()},
    }
    connections = {"weather": weather.connection(), "backup": backup.connection()}
    upstream = settings.upstream
    queue = await create_pool(build_worker_settings(settings).redis_settings)  # type: ignore[attr-defined]
    admin = BreakerAdmin(store.redis, settings.breaker, key_prefix=settings.session.key_prefix)
    registry = BreakerRegistry(
        store.redis, settings.breaker, key_prefix=settings.session.key_prefix
    )
    try:
        async with (
            registry,
            UpstreamPool(
                store,
                connectors=[McpConnector.from_settings(upstream)],
                credentials=credentials_for(settings, {}),
                settings=upstream,
                gates=BreakerGates(registry),
                reconnects=ArqReconnects.from_settings(queue, settings),
                maintain_every=None,
            ) as pool,
        ):
            session = await store.create()
            servers = McpServers(pool, session.id, connections, fallbacks={"weather": ["backup"]})
            await servers.register()
            breaker = servers.specs["weather"].breaker_name
            assert (await servers.call_tool("weather", "whoami")).upstream == "weather"

            weather.kill()
            served = await servers.call_tool("weather", "whoami")
            assert served.upstream == "backup" and served.skipped[0][0] == "weather"
            assert (await admin.status(breaker)).state is BreakerState.OPEN
            others = await asyncio.gather(
                _other_replica(fields, session.id, connections),
                _other_replica(fields, session.id, connections),
            )
            for other in others:
                assert other.get("upstream") == "backup", other
                assert other["skipped"] == [["weather", "breaker_open"]], other
            record = await pool.records.get(session.id, "weather")
            assert record is not None and record.state is UpstreamState.RECONNECTING
            given_up = record.attempts

            runs = []
            for _ in range(6):  # one job run at a time, until its half-open probe failed
                runs.append(await run_fleet_worker(settings, max_burst_jobs=1))
                record = await pool.records.get(session.id, "weather")
                if record is not None and record.attempts > given_up:
                    break
            assert all((w.jobs_retried, w.jobs_complete) == (1, 0) for w in runs)
            assert record is not None and record.attempts == given_up + 1
            assert record.last_error is not None and record.last_error.startswith("refused")
            assert record.next_attempt_at is not None
            status = await admin.status(breaker)
            assert status.state is BreakerState.OPEN and status.cause == "probe_failed"

            weather.start()
            worker = await run_fleet_worker(settings)
            assert worker.jobs_complete == 1
            status = await admin.status(breaker)
            assert status.state is BreakerState.CLOSED and status.cause == "probes_succeeded"

            async def replica_sees_closed() -> bool:
                return (await registry.get(breaker)).state is BreakerState.CLOSED

            await eventually(replica_sees_closed, timeout=10)
            served = await servers.call_tool("weather", "whoami")
            assert served.upstream == "weather" and not served.fell_back
            other = await _other_replica(fields, session.id, connections)
            assert (other.get("upstream"), other.get("skipped")) == ("weather", []), other
    finally:
        await queue.aclose()
        weather.kill()
        backup.kill()


async def test_another_process_continues_the_upstream_session_from_the_record(
    store: SessionStore, redis_url: str, secret_key: str
) -> None:
    """Process A (this one) opens the upstream session and calls a stateful tool; process
    B (a child process with its own pool) continues that session from the record in
    Redis: the counter goes on, and the upstream saw one session, not two."""
    settings = fleet_settings(store, redis_url, secret_key)
    weather = HttpServer("weather").start()
    fields = {
        "redis_url": redis_url,
        "key_prefix": settings.session.key_prefix,
        "shards": settings.session.shards,
        "secret_key": secret_key,
    }
    connections = {"weather": weather.connection()}
    upstream = settings.upstream
    try:
        async with UpstreamPool(
            store,
            connectors=[McpConnector.from_settings(upstream)],
            credentials=credentials_for(settings, {}),
            settings=upstream,
            maintain_every=None,
        ) as pool:
            session = await store.create()
            servers = McpServers(pool, session.id, connections)
            await servers.register()
            first = await servers.call_tool("weather", "counter")
            assert first.value.structured_content == {"result": 1}
            record = await pool.records.get(session.id, "weather")
            assert record is not None and record.resume is not None
            other = await _other_replica(fields, session.id, connections, tool="counter")
            assert other.get("value") == {"result": 2}, other
            seen = await servers.call_tool("weather", "sessions")
            assert seen.value.structured_content == {"result": 1}
    finally:
        weather.kill()
