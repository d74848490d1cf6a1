"""What the benchmarks share: a Redis round-trip counter, the Redis to run against, and a
loop that runs calls a number at a time.

Importing this module patches redis-py (async and sync) so that every command
or pipeline written to a socket counts one in `SENDS`: one write is one round
trip. The scripts are run as ``python benchmarks/<name>.py``, so this folder is
on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.connection import AbstractConnection as SyncConnection

from sessionstore.testing import LocalRedis

SENDS: Counter[str] = Counter()
_async_send = AsyncConnection.send_packed_command
_sync_send = SyncConnection.send_packed_command


async def _counting_async(self: AsyncConnection, command: Any, check_health: bool = True) -> None:
    SENDS["n"] += 1
    await _async_send(self, command, check_health)


def _counting_sync(self: SyncConnection, command: Any, check_health: bool = True) -> None:
    SENDS["n"] += 1
    _sync_send(self, command, check_health)


AsyncConnection.send_packed_command = _counting_async  # type: ignore[method-assign]
SyncConnection.send_packed_command = _counting_sync  # type: ignore[method-assign]


@contextmanager
def redis_url() -> Iterator[str]:
    """``SESSIONSTORE_REDIS_URL`` if set, else the URL of a private server for the run."""
    given = os.environ.get("SESSIONSTORE_REDIS_URL")
    if given:
        yield given
        return
    with LocalRedis() as server:
        yield server.url


async def measure(
    count: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> tuple[float, float]:
    """(calls per second, Redis round trips per call) for `count` calls of ``call(index)``,
    `concurrency` at a time."""
    SENDS.clear()
    next_index = 0

    async def runner() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await call(index)

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return count / (time.perf_counter() - start), SENDS["n"] / count


async def cost_per_call(
    op: Callable[[], Awaitable[object]], calls: int, concurrency: int, *, warm_up: int
) -> tuple[float, float]:
    """(wall us, CPU us of this process) per call of `calls` calls of ``op()``,
    `concurrency` at a time, after `warm_up` calls that are not measured."""
    for _ in range(warm_up):
        await op()

    async def runner(count: int) -> None:
        for _ in range(count):
            await op()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(runner(calls // concurrency) for _ in range(concurrency)))
    done = calls // concurrency * concurrency
    return (time.perf_counter() - wall) / done * 1e6, (time.process_time() - cpu) / done * 1e6


async def redis_cpu_seconds(redis: Any) -> float:
    """The Redis server's CPU time so far (``INFO cpu``: user + system), in seconds."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def cost_per_call_with_server(
    op: Callable[[], Awaitable[object]], calls: int, concurrency: int, *, warm_up: int, redis: Any
) -> tuple[float, float, float]:
    """`cost_per_call`'s figures and the Redis server's CPU us per call (networking
    included), from ``INFO cpu`` of `redis`, a client of the server the calls go to."""
    for _ in range(warm_up):
        await op()
    before = await redis_cpu_seconds(redis)
    wall, cpu = await cost_per_call(op, calls, concurrency, warm_up=0)
    done = calls // concurrency * concurrency
    return wall, cpu, (await redis_cpu_seconds(redis) - before) / done * 1e6


def median_and_min(samples: list[float]) -> str:
    """``median / minimum`` of a figure's samples over the rounds, as the A/B tables print it."""
    return f"{statistics.median(samples):7.1f} /{min(samples):6.1f}"
