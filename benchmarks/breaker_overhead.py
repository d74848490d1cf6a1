"""What a fleet-shared breaker costs a guarded call, and how fast a transition spreads.

In one run, against one Redis:

1. Guarded-call throughput with the breaker closed, one caller, a trivial
   upstream call (so the figure is the breaker's own overhead): unguarded,
   sessionstore batched (the default 20 ms flush), sessionstore with inline
   recording, and pybreaker 1.x with `CircuitRedisStorage` (a sync redis-py
   client; beside a sync unguarded baseline). Round trips per call are counted
   by wrapping redis-py's send_packed_command (one write = one round trip).
2. Transition propagation between two processes: a spawned replica notes the
   monotonic time (CLOCK_MONOTONIC, shared by processes on one host) when its
   local view changes; this process starts the clock just before each
   force_open / reset. By push (pub/sub) and by polling alone.

    python benchmarks/breaker_overhead.py [--calls 20000] [--transitions 200]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import multiprocessing
import queue
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pybreaker
import redis
from _common import SENDS, redis_url

from sessionstore import BreakerSettings, RedisSettings, create_client
from sessionstore.breaker import BreakerAdmin, BreakerRegistry

NAME = "imap:bench.example.com:993"


def _result(name: str, calls: int, elapsed: float, sends: int) -> dict[str, Any]:
    return {"name": name, "rate": calls / elapsed, "us": elapsed / calls * 1e6, "rt": sends / calls}


# -- 1. throughput ---------------------------------------------------------------------


def sync_cases(url: str, calls: int) -> list[dict[str, Any]]:
    """Unguarded sync call and pybreaker with its Redis storage."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    # pybreaker decodes bytes itself; timeouts so a stalled server fails instead of hanging.
    client = redis.Redis(host=host, port=int(port), socket_timeout=5, socket_connect_timeout=5)
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace="bench" + secrets.token_hex(3)
    )
    breaker = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=30, state_storage=storage)

    def upstream() -> int:
        return 1

    results = []
    for name, one in (
        ("sync unguarded", upstream),
        ("pybreaker + CircuitRedisStorage", lambda: breaker.call(upstream)),
        ("(context) sync redis-py PING", client.ping),
    ):
        for _ in range(min(500, calls)):
            one()
        SENDS.clear()
        start = time.perf_counter()
        for _ in range(calls):
            one()
        results.append(_result(name, calls, time.perf_counter() - start, SENDS["n"]))
    client.close()
    return results


async def async_cases(url: str, calls: int) -> list[dict[str, Any]]:
    """Unguarded async call, and sessionstore guarded (batched and inline)."""

    async def upstream() -> int:
        return 1

    async def timed(name: str, one: Callable[[], Awaitable[object]], flush: Any) -> dict[str, Any]:
        for _ in range(min(500, calls)):
            await one()
        await flush()
        SENDS.clear()
        start = time.perf_counter()
        for _ in range(calls):
            await one()
        elapsed = time.perf_counter() - start
        await flush()  # what is still buffered belongs to these calls
        return _result(name, calls, elapsed, SENDS["n"])

    async def nothing() -> None:
        return None

    results = [await timed("async unguarded", upstream, nothing)]
    pinger = create_client(RedisSettings.from_dsn(url))
    results.append(await timed("(context) async redis-py PING", pinger.ping, nothing))
    await pinger.aclose()
    for label, flush_every in (
        ("sessionstore guard, batched 20 ms", timedelta(milliseconds=20)),
        ("sessionstore guard, inline record", timedelta(0)),
    ):
        client = create_client(RedisSettings.from_dsn(url))
        settings = BreakerSettings(record_flush_interval=flush_every)
        prefix = "bench" + secrets.token_hex(3)
        async with BreakerRegistry(client, settings, key_prefix=prefix) as registry:
            breaker = await registry.get(NAME)
            results.append(
                await timed(label, lambda b=breaker: b.call(upstream), registry.flush)  # type: ignore[misc]
            )
            status = await registry.admin.status(NAME)
            assert status.calls >= calls, "every outcome reached the shared window"
        await client.aclose()
    return results


# -- 2. propagation ------------------------------------------------------------------------


def replica(url: str, prefix: str, push: bool, bound_ms: int, out: Any) -> None:
    """A second process: report (gen, monotonic time) whenever its view of NAME changes."""

    async def main() -> None:
        client = create_client(RedisSettings.from_dsn(url))
        settings = BreakerSettings(staleness_bound=timedelta(milliseconds=bound_ms))
        async with BreakerRegistry(client, settings, key_prefix=prefix, push=push) as registry:
            registry.on_transition(lambda name, old, new: out.put((new.gen, time.monotonic())))
            await registry.get(NAME)
            # health() is a plain snapshot with nothing to await; poll it, with a deadline.
            async with asyncio.timeout(30):
                while push and not registry.health().push_live:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            out.put(("ready", 0.0))
            await asyncio.Event().wait()  # until terminated

    asyncio.run(main())


async def propagation(url: str, transitions: int, push: bool, bound_ms: int) -> list[float]:
    """Delays (ms) from just before each force_open/reset here to the replica applying it."""
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    prefix = "bench" + secrets.token_hex(3)
    child = spawn.Process(target=replica, args=(url, prefix, push, bound_ms, out), daemon=True)
    child.start()
    client = create_client(RedisSettings.from_dsn(url))
    admin = BreakerAdmin(client, BreakerSettings(), key_prefix=prefix)
    delays = []
    try:
        assert await asyncio.to_thread(out.get, True, 60) == ("ready", 0.0)
        for i in range(transitions):
            start = time.monotonic()
            if i % 2 == 0:
                snap = await admin.force_open(NAME, actor="bench", reason="propagation")
            else:
                snap = await admin.reset(NAME, actor="bench")
            while True:
                try:
                    gen, seen = await asyncio.to_thread(out.get, True, 30)
                except queue.Empty as exc:
                    raise RuntimeError(f"transition {snap.gen} never reached the replica") from exc
                if gen == snap.gen:
                    break
            delays.append((seen - start) * 1000)
    finally:
        child.terminate()
        child.join(10)
        await client.aclose()
    return delays


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_async(url: str, calls: int, transitions: int) -> None:
    print("measuring sync cases (pybreaker)...", flush=True)
    sync = sync_cases(url, calls)
    print("measuring async cases (sessionstore)...", flush=True)
    results = await async_cases(url, calls)
    print(f"redis: {url}   calls per case: {calls}   one caller, trivial upstream call")
    header = f"{'case':36} {'calls/s':>10} {'us/call':>8} {'round trips/call':>17}"
    print(header)
    print("-" * len(header))
    for r in [*results, *sync]:
        print(f"{r['name']:36} {r['rate']:10.0f} {r['us']:8.2f} {r['rt']:17.4f}")
    by = {r["name"]: r for r in [*results, *sync]}
    base_async, base_sync = by["async unguarded"], by["sync unguarded"]
    ours = by["sessionstore guard, batched 20 ms"]
    inline = by["sessionstore guard, inline record"]
    theirs = by["pybreaker + CircuitRedisStorage"]
    print()
    print(
        f"overhead per call (guarded minus unguarded, us): sessionstore batched "
        f"{ours['us'] - base_async['us']:.2f}, inline {inline['us'] - base_async['us']:.2f}, "
        f"pybreaker {theirs['us'] - base_sync['us']:.2f}"
    )
    print(
        f"throughput ratio sessionstore batched / pybreaker: {ours['rate'] / theirs['rate']:.1f}x; "
        f"inline / pybreaker: {inline['rate'] / theirs['rate']:.1f}x"
    )
    print(
        f"round trips per call: sessionstore batched {ours['rt']:.4f} (reads: 0), "
        f"inline {inline['rt']:.2f}, pybreaker {theirs['rt']:.2f}"
    )
    print()
    print(f"transition propagation to another process ({transitions} transitions each):")
    header = f"{'path':34} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'bound ms':>9}"
    print(header)
    print("-" * len(header))
    for label, push, bound in (
        ("push (pub/sub), bound 1000 ms", True, 1000),
        ("polling only, bound 200 ms", False, 200),
    ):
        delays = await propagation(url, transitions, push, bound)
        sys.stdout.flush()
        print(
            f"{label:34} {statistics.median(delays):7.2f} {_pct(delays, 90):7.2f} "
            f"{_pct(delays, 99):7.2f} {max(delays):7.2f} {bound:9d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--transitions", type=int, default=200)
    args = parser.parse_args()
    # A stall prints every thread's stack and exits rather than hanging silently.
    faulthandler.dump_traceback_later(600, exit=True)
    with redis_url() as url:
        asyncio.run(run_async(url, args.calls, args.transitions))
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main()
