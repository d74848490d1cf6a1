"""MCP tool calls per second: the plain SDK on one replica beside `mcp_app` on one and on
three replicas behind HAProxy, in the same run, with Redis writes per call.

* ``plain SDK, 1 replica``     the SDK's own Streamable HTTP app (sessions in memory)
* ``plain SDK, 1 replica, in-memory events``  the same with an in-memory EventStore:
                               the SDK's own resumability (its priming event, event
                               ids), the like-for-like row for the servers with events
* ``mcp_app, 1 replica, resumable=False``  sessions in Redis, SSE events not (the
                               plain SDK keeps no events either: the like-for-like row)
* ``mcp_app, 1 replica``       the same server through `mcp_app` (sessions and events in Redis)
* ``mcp_app, 3 replicas``      three uvicorn processes behind HAProxy (round robin,
                               no stickiness): every call may land on another replica

The one-replica servers run in this process on uvicorn (so the Redis writes of a call
are counted here: every socket write of commands is one, and concurrent calls whose
writes the store's connection coalesces share one; writes of nothing but events counted
apart); the three replicas are child processes. Clients are the SDK's own
`Client` (handshake mode), ``--clients`` sessions calling concurrently. Every server is
up for the whole run and the rows are measured in ``--rounds`` rounds, one after the
other in each round, so a shared machine's load swings reach every row alike: a row
shows its median rate and the median of its per-round ratios to the plain SDK. For the
servers in this process it also shows this process's CPU per call (the clients' and the
server's together) and the plain SDK's over it, per round: on a shared machine other
processes' load moves the rates far more than it moves CPU per call.

    python benchmarks/mcp_calls.py [--calls 600] [--clients 4] [--rounds 3]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
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


async def run_calls(
    url: str, tool: str, count: int, clients: int
) -> tuple[float, float, float, float]:
    """(calls/s, Redis writes per call, event writes per call, CPU ms of this process
    per call) of `tool` on `url`."""
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
        cpu = time.process_time()
        rate, trips = await measure(count, clients, call)
        cpu_ms = (time.process_time() - cpu) / count * 1000
        print(f"  {url} {tool}: {rate:.0f} calls/s", file=sys.stderr, flush=True)
        return rate, trips, EVENT_WRITES["n"] / count, cpu_ms


def main(count: int, clients: int, rounds: int) -> None:
    with redis_url() as url:
        prefix = "mcpbench" + secrets.token_hex(3)
        with three_replicas_behind_haproxy(url, prefix) as three:
            rows = asyncio.run(measure_all(url, prefix, three, count, clients, rounds))
    report(rows, count, clients, rounds)


#: (server, tool) -> one (calls/s, round trips/call, event writes/call, CPU ms/call) per round.
Rows = dict[tuple[str, str], list[tuple[float, float, float, float]]]
PLAIN = ("plain SDK, 1 replica", "echo")
PLAIN_EVENTS = ("plain SDK, 1 replica, in-memory events", "echo")


def like_for_like(name: str) -> tuple[str, str]:
    """The plain SDK row a row compares with: the one that keeps events as that row does."""
    keeps_events = name == PLAIN_EVENTS[0] or (
        name.startswith("mcp_app") and "resumable=False" not in name
    )
    return PLAIN_EVENTS if keeps_events else PLAIN


async def measure_all(
    url: str, prefix: str, three: str, count: int, clients: int, rounds: int
) -> Rows:
    """Every row, `rounds` times, the rows one after the other in each round."""
    settings = Settings(redis_url=url, key_prefix=prefix)
    rows: Rows = {}
    async with (
        served(plain_app()) as plain,
        served(plain_app(resumable=True)) as plain_events,
        served(roaming_app(settings, resumable=False)) as bare,
        served(roaming_app(settings)) as one,
    ):
        configs: list[tuple[str, str, tuple[str, ...]]] = [
            (PLAIN[0], plain, ("echo",)),
            (PLAIN_EVENTS[0], plain_events, ("echo",)),
            ("mcp_app, 1 replica, resumable=False", bare, ("echo", "bump")),
            ("mcp_app, 1 replica", one, ("echo", "bump")),
            ("mcp_app, 3 replicas + HAProxy", three, ("echo", "bump")),
        ]
        for _ in range(rounds):
            for name, target, tools in configs:
                for tool in tools:
                    measured = await run_calls(target, tool, count, clients)
                    if target == three:  # counted in other processes
                        measured = (measured[0], float("nan"), float("nan"), float("nan"))
                    rows.setdefault((name, tool), []).append(measured)
    return rows


def report(rows: Rows, count: int, clients: int, rounds: int) -> None:
    """The rows as a Markdown table: median rates, median per-round ratios to the plain SDK
    (without events) and to the plain SDK that keeps events as the row does ("alike"),
    and for the servers in this process its CPU per call (clients and server together)
    with the alike plain SDK's CPU per call over it, which load on a shared machine moves
    less than the rates."""
    base = [run[0] for run in rows[PLAIN]]
    print(f"{count} calls, {clients} clients calling concurrently, {rounds} rounds\n")
    print(
        "| server | tool | calls/s | vs plain | vs plain keeping events alike | CPU ms/call"
        " | alike plain's CPU over it | Redis writes/call | event writes/call |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, tool), runs in rows.items():
        rate = statistics.median(run[0] for run in runs)
        ratio = statistics.median(run[0] / b for run, b in zip(runs, base, strict=True))
        alike_runs = rows[like_for_like(name)]
        alike_ratio = statistics.median(
            run[0] / b[0] for run, b in zip(runs, alike_runs, strict=True)
        )
        cpu = statistics.median(run[3] for run in runs)
        cpu_ratio = statistics.median(
            b[3] / run[3] for run, b in zip(runs, alike_runs, strict=True)
        )
        trips = statistics.median(run[1] for run in runs)
        events = statistics.median(run[2] for run in runs)
        rt = "n/a (other processes)" if trips != trips else f"{trips:.2f}"
        ev = "n/a" if events != events else f"{events:.2f}"
        cp = "n/a" if cpu != cpu else f"{cpu:.2f}"
        cr = "n/a" if cpu_ratio != cpu_ratio else f"{cpu_ratio:.2f}"
        print(
            f"| {name} | {tool} | {rate:.0f} | {ratio:.2f} | {alike_ratio:.2f} | {cp} | {cr}"
            f" | {rt} | {ev} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.calls, args.clients, args.rounds)
