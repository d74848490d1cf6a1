"""MCP tool calls per second: the plain SDK on one replica beside `mcp_app` on one and on
three replicas behind HAProxy, in the same run, with Redis round trips per call.

* ``plain SDK, 1 replica``     the SDK's own Streamable HTTP app (sessions in memory)
* ``mcp_app, 1 replica, resumable=False``  sessions in Redis, SSE events not (the
                               plain SDK keeps no events either: the like-for-like row)
* ``mcp_app, 1 replica``       the same server through `mcp_app` (sessions and events in Redis)
* ``mcp_app, 3 replicas``      three uvicorn processes behind HAProxy (round robin,
                               no stickiness): every call may land on another replica

The one-replica servers run in this process on uvicorn (so the Redis round trips of a
call are counted here: every command or pipeline written is one, event writes counted
apart); the three replicas are child processes. Clients are the SDK's own `Client`
(handshake mode), ``--clients`` sessions calling concurrently.

    python benchmarks/mcp_calls.py [--calls 600] [--clients 4]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from _common import SENDS, measure, redis_url
from mcp.client.client import Client
from mcp_server import plain_app, roaming_app
from redis.asyncio.connection import AbstractConnection
from starlette.applications import Starlette

from sessionstore import Settings
from sessionstore.testing import free_port

HERE = Path(__file__).resolve().parent
EVENT_WRITES: dict[str, int] = {"n": 0}
UVICORN = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "mcp_server:app"]
_send = AbstractConnection.send_packed_command


async def _split_event_writes(
    self: AbstractConnection, command: Any, check_health: bool = True
) -> None:
    # _common counts every write; writes of nothing but events (XADD) and the background
    # tails' blocking reads (XREAD) are taken back out and the event writes counted apart
    # (an event riding with the lease's return is part of that round trip).
    packed = command if isinstance(command, bytes | bytearray) else b"".join(command)
    if b"XADD" in packed and b"EVALSHA" not in packed:
        EVENT_WRITES["n"] += 1
        SENDS["n"] -= 1
    elif b"XREAD" in packed:
        SENDS["n"] -= 1
    await _send(self, command, check_health)


AbstractConnection.send_packed_command = _split_event_writes  # type: ignore[method-assign]


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """`app` on uvicorn in this process; yields its MCP URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's Server offers no started event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task


@contextmanager
def three_replicas_behind_haproxy(url: str, prefix: str) -> Iterator[str]:
    """Three `mcp_app` replicas as child processes and HAProxy in front; yields its MCP URL."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    directory = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    env = {**os.environ, "SESSIONSTORE_REDIS_URL": url, "SESSIONSTORE_KEY_PREFIX": prefix}
    ports = [free_port() for _ in range(3)]
    children = [
        subprocess.Popen(
            [*UVICORN, "--port", str(port), "--log-level", "error"],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for port in ports
    ]
    front = free_port()
    config = directory / "haproxy.cfg"
    servers = "\n".join(f"    server r{n} 127.0.0.1:{p}" for n, p in enumerate(ports))
    config.write_text(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 65s\n"
        "    timeout server 65s\n    option http-server-close\n"
        f"frontend mcp\n    bind 127.0.0.1:{front}\n    default_backend replicas\n"
        f"backend replicas\n    balance roundrobin\n{servers}\n"
    )
    children.append(subprocess.Popen([haproxy, "-db", "-f", str(config)]))
    try:
        for port in [*ports, front]:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield f"http://127.0.0.1:{front}/mcp"
    finally:
        for child in children:
            child.terminate()
            child.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


async def run_calls(url: str, tool: str, count: int, clients: int) -> tuple[float, float, float]:
    """(calls/s, Redis round trips per call, event writes per call) of `tool` on `url`."""
    arguments = {"text": "hi"} if tool == "echo" else {}
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(Client(url, mode="legacy")) for _ in range(clients)
        ]
        for client in sessions:  # warm: every replica knows the session
            for _ in range(3):
                await client.call_tool(tool, arguments)
        await asyncio.sleep(0.5)  # let the clients' GET streams settle before counting

        async def call(index: int) -> None:
            result = await sessions[index % clients].call_tool(tool, arguments)
            assert not result.is_error, result

        EVENT_WRITES["n"] = 0
        rate, trips = await measure(count, clients, call)
        print(f"  {url} {tool}: {rate:.0f} calls/s", file=sys.stderr, flush=True)
        return rate, trips, EVENT_WRITES["n"] / count


def main(count: int, clients: int) -> None:
    with redis_url() as url:
        prefix = "mcpbench" + secrets.token_hex(3)
        with three_replicas_behind_haproxy(url, prefix) as three:
            rows = asyncio.run(measure_all(url, prefix, three, count, clients))
    report(rows, count, clients)


Row = tuple[str, str, float, float, float]


async def measure_all(url: str, prefix: str, three: str, count: int, clients: int) -> list[Row]:
    """Every row, the configurations one after the other."""
    settings = Settings(redis_url=url, key_prefix=prefix)
    rows: list[Row] = []
    async with served(plain_app()) as plain:
        rows.append(
            ("plain SDK, 1 replica", "echo", *await run_calls(plain, "echo", count, clients))
        )
    async with served(roaming_app(settings, resumable=False)) as bare:
        for tool in ("echo", "bump"):
            name = "mcp_app, 1 replica, resumable=False"
            rows.append((name, tool, *await run_calls(bare, tool, count, clients)))
    async with served(roaming_app(settings)) as one:
        for tool in ("echo", "bump"):
            rows.append(("mcp_app, 1 replica", tool, *await run_calls(one, tool, count, clients)))
    for tool in ("echo", "bump"):
        rate, _, _ = await run_calls(three, tool, count, clients)
        rows.append(("mcp_app, 3 replicas + HAProxy", tool, rate, float("nan"), float("nan")))
    return rows


def report(rows: list[Row], count: int, clients: int) -> None:
    """The rows as a Markdown table, rates against the plain SDK's."""
    base = rows[0][2]
    print(f"{count} calls, {clients} clients calling concurrently\n")
    print("| server | tool | calls/s | vs plain | Redis RT/call | event writes/call |")
    print("|---|---|---|---|---|---|")
    for name, tool, rate, trips, events in rows:
        rt = "n/a (other processes)" if trips != trips else f"{trips:.2f}"
        ev = "n/a" if events != events else f"{events:.2f}"
        print(f"| {name} | {tool} | {rate:.0f} | {rate / base:.2f} | {rt} | {ev} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    main(args.calls, args.clients)
