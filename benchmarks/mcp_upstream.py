"""MCP tool calls through the upstream pool, beside the bare SDK ClientSession, in one run.

Starts the test MCP servers (a stdio child and a Streamable HTTP server under
uvicorn, written with the SDK) and a private Redis (or uses
SESSIONSTORE_REDIS_URL), then runs the same read-only tool call (``add``)

- on a bare SDK ``ClientSession`` over the SDK's own transport, and
- through `UpstreamPool` / `McpServers` (checkout, breaker gate, fault
  classification, the owner task's relay, throttled record writes),

with the same concurrency on one connection, alternating rounds, and prints
calls per second, their ratio and Redis round trips per pooled call (the
steady state should be zero).

    python benchmarks/mcp_upstream.py [--calls 2000] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parents[1]))

from _common import measure, redis_url
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client
from sessionstore.upstream import Credentials, McpServers, SecretBox, UpstreamPool, UpstreamSettings
from sessionstore.upstream.mcp import McpConnector
from tests.upstream.mcp_processes import HttpServer, stdio_connection


def bare_transport(connection: dict[str, Any]) -> AbstractAsyncContextManager[Any]:
    """The SDK's own transport for a connection dict."""
    if connection["transport"] == "stdio":
        params = StdioServerParameters(
            command=connection["command"], args=connection["args"], cwd=connection["cwd"]
        )
        return stdio_client(params)
    return streamable_http_client(connection["url"])


async def bare(connection: dict[str, Any], calls: int, concurrency: int) -> tuple[float, float]:
    """Calls per second on one bare ClientSession."""
    async with bare_transport(connection) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("add", {"a": 1, "b": 1})
        return await measure(
            calls, concurrency, lambda i: session.call_tool("add", {"a": i, "b": 1})
        )


async def pooled(
    servers: McpServers, name: str, calls: int, concurrency: int
) -> tuple[float, float]:
    """Calls per second through the pool (one pooled connection)."""
    await servers.call_tool(name, "add", {"a": 1, "b": 1})  # open it, write the record
    return await measure(
        calls, concurrency, lambda i: servers.call_tool(name, "add", {"a": i, "b": 1})
    )


async def main(calls: int, concurrency: int, rounds: int) -> None:
    """Print the figures."""
    http = HttpServer("bench").start()
    try:
        with redis_url() as url:
            redis = create_client(RedisSettings.from_dsn(url))
            store = SessionStore(redis, SessionSettings(key_prefix="bench-mcp"))
            settings = UpstreamSettings.for_profile("stable")
            credentials = Credentials(
                providers=[], box=SecretBox([SecretStr(SecretBox.generate_key())])
            )
            connections = {"stdio": stdio_connection("bench"), "http": http.connection()}
            print(
                f"MCP tools/call add, {calls} calls, {concurrency} at a time on one connection, "
                f"median of {rounds} alternating rounds"
            )
            async with UpstreamPool(
                store,
                connectors=[McpConnector.from_settings(settings)],
                credentials=credentials,
                settings=settings,
                maintain_every=None,
            ) as pool:
                session = await store.create()
                servers = McpServers(pool, session.id, connections)
                await servers.register()
                for name, connection in connections.items():
                    bare_rates, pooled_rates, trips = [], [], []
                    for _ in range(rounds):
                        bare_rates.append((await bare(connection, calls, concurrency))[0])
                        rate, per_call = await pooled(servers, name, calls, concurrency)
                        pooled_rates.append(rate)
                        trips.append(per_call)
                    b, p = statistics.median(bare_rates), statistics.median(pooled_rates)
                    label = f"  {name:5}"
                    print(f"{label}  bare SDK ClientSession      {b:8.0f} calls/s")
                    print(
                        f"{label}  UpstreamPool/McpServers     {p:8.0f} calls/s   ratio {p / b:.2f}"
                    )
                    worst = max(trips)
                    print(f"{label}  Redis round trips per pooled call (worst round): {worst:.4f}")
            await redis.aclose()
    finally:
        http.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.concurrency, options.rounds))
