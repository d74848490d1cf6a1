"""Client cost per call of the store's hot calls on this checkout's multiplexed
connection beside another git revision's.

One process, one store, one Redis: the client's `MultiplexedConnection` is
swapped between this checkout's (``sessionstore/_multiplex.py``) and the
revision's, round by round, so both see the same machine load and the same
store code around them; raw redis-py's single commands run beside them. Per
call it prints the wall time and the process CPU time (``time.process_time``,
which the machine's load inflates far less than wall time), medians and
minimums over the rounds, at each concurrency given.

    python benchmarks/multiplex_revisions.py [--against main] [--calls 3000]
        [--rounds 7] [--concurrency 1 32]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import cost_per_call, median_and_min, redis_url
from redis.asyncio import Redis

from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client
from sessionstore._multiplex import MultiplexedConnection

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 100

Op = Callable[[], Awaitable[object]]


def at_revision(revision: str) -> ModuleType:
    """``sessionstore/_multiplex.py`` as `revision` has it, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:sessionstore/_multiplex.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="multiplex-")) / "_multiplex_against.py"
    path.write_text(source)
    name = "sessionstore._multiplex_against"  # relative imports resolve in sessionstore
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def run(url: str, against: str, calls: int, rounds: int, levels: list[int]) -> None:
    client = create_client(RedisSettings.from_dsn(url))
    raw: Redis = Redis.from_url(url)
    store = SessionStore(client, SessionSettings(key_prefix="muxrev", shards=4))
    sid = (await store.create(user_id="u1", state={"theme": "dark", "n": 0})).id
    await raw.hset("muxrev:raw", mapping={"user_id": "u1", "a:theme": '"dark"', "a:n": "0"})
    pool, callbacks = client.connection_pool, client.response_callbacks
    old = at_revision(against).MultiplexedConnection
    ways: dict[str, Any] = {
        "this": MultiplexedConnection(pool, callbacks),
        against: old(pool, callbacks),
    }

    async def track() -> None:
        async with store.track_request(sid):
            pass

    async def cycle() -> None:
        session = await store.get(sid)
        await store.set_state(sid, {"n": int(session.state["n"]) + 1})  # type: ignore[call-overload]

    async def raw_track() -> None:
        await raw.zadd("muxrev:raw:requests", {"r": 1})
        await raw.zrem("muxrev:raw:requests", "r")

    store_ops: dict[str, Op] = {
        "get": lambda: store.get(sid),
        "set_state (1 attribute)": lambda: store.set_state(sid, {"x": 1}),
        "track_request (begin+end)": track,
        "get + set_state": cycle,
    }
    raw_ops: dict[str, Op] = {
        "get": lambda: raw.hgetall("muxrev:raw"),
        "set_state (1 attribute)": lambda: raw.hset("muxrev:raw", "a:x", "1"),
        "track_request (begin+end)": raw_track,
    }
    try:
        for concurrency in levels:
            figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for _ in range(rounds):
                for name, op in store_ops.items():
                    for way, multiplexed in ways.items():
                        client.multiplexed = multiplexed
                        got = await cost_per_call(op, calls, concurrency, warm_up=WARM_UP)
                        figures.setdefault((name, way), []).append(got)
                    if name in raw_ops:
                        got = await cost_per_call(
                            raw_ops[name], calls, concurrency, warm_up=WARM_UP
                        )
                        figures.setdefault((name, "redis-py"), []).append(got)
            report(concurrency, figures)
    finally:
        for multiplexed in ways.values():
            await multiplexed.aclose()
        await client.aclose()
        await raw.aclose()


def report(concurrency: int, figures: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    print(f"\nconcurrency {concurrency}   (per call: median / minimum over the rounds)")
    print(f"{'call':28} {'multiplexed':12} {'wall us':>15} {'cpu us':>15}")
    print("-" * 72)
    for (name, way), values in figures.items():
        wall = [w for w, _ in values]
        cpu = [c for _, c in values]
        print(f"{name:28} {way:12} {median_and_min(wall)} {median_and_min(cpu)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    with redis_url() as url:
        asyncio.run(run(url, args.against, args.calls, args.rounds, args.concurrency))


if __name__ == "__main__":
    main()
