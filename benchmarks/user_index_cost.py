"""What the user index costs create, rotate and list_for_user, by the user's session count.

For users that hold 1, 10, 100 and 1000 sessions each, it times `create` (a session
more for the user), `rotate` and `list_for_user(limit=10)`, one call at a time, and
prints per call the wall time and the Redis process's CPU time (``INFO cpu`` deltas:
the server's own work and its networking, which waiting for a core does not
inflate) and the user index's memory per session. It measures the package on the
path, so a revision is compared by running it with that revision's package first on
``PYTHONPATH``:

    .venv/bin/python benchmarks/user_index_cost.py [--calls 2000]
    git archive <rev> sessionstore | tar -x -C /tmp/rev
    PYTHONPATH=/tmp/rev .venv/bin/python benchmarks/user_index_cost.py

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

from _common import redis_url
from redis.asyncio import Redis

import sessionstore
from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client


async def _redis_cpu_us(raw: Redis) -> float:
    info = await raw.info("cpu")
    return (float(info["used_cpu_sys"]) + float(info["used_cpu_user"])) * 1e6


async def _per_call(
    raw: Redis, calls: int, op: Callable[[int], Awaitable[object]]
) -> tuple[float, float]:
    """(wall us, Redis CPU us) per call of ``op(i)`` for i below `calls`."""
    cpu, wall = await _redis_cpu_us(raw), time.perf_counter()
    for i in range(calls):
        await op(i)
    wall = time.perf_counter() - wall
    return wall / calls * 1e6, (await _redis_cpu_us(raw) - cpu) / calls


async def _memory_per_session(raw: Redis, prefix: str, sessions: int) -> float:
    """The user index's bytes per session under `prefix` (either layout)."""
    total = 0
    for pattern in (f"{prefix}:user:*", f"{prefix}:users:*"):
        async for key in raw.scan_iter(match=pattern, count=1000):
            total += await raw.memory_usage(key, samples=0) or 0
    return total / sessions


def _calls(
    store: SessionStore, users: list[str], made: list[str]
) -> dict[str, Callable[[int], Awaitable[object]]]:
    return {
        "create": lambda i: store.create(user_id=users[i % len(users)]),
        "rotate": lambda i: store.rotate(made[i % len(made)]),
        "list (10)": lambda i: store.list_for_user(users[i % len(users)], limit=10),
    }


async def run(url: str, calls: int, per_user_counts: list[int]) -> None:
    client = create_client(RedisSettings.from_dsn(url))
    raw = Redis.from_url(url)
    print(f"package {sessionstore.__file__}")
    print(f"{'sessions per user':>18} {'call':>14} {'wall us':>9} {'redis cpu us':>13}")
    try:
        for per_user in per_user_counts:
            prefix = "uidx" + secrets.token_hex(3)
            store = SessionStore(client, SessionSettings(key_prefix=prefix))
            await store.load_scripts()
            users = [f"user{secrets.token_hex(4)}" for _ in range(max(1, calls // per_user))]
            made = [
                (await store.create(user_id=user)).id for user in users for _ in range(per_user)
            ]
            memory = await _memory_per_session(raw, prefix, len(made))
            for name, op in _calls(store, users, made).items():
                wall, cpu = await _per_call(raw, calls, op)
                print(f"{per_user:>18} {name:>14} {wall:9.1f} {cpu:13.1f}")
            print(f"{per_user:>18} {'index memory':>14} {memory:9.1f} B per session")
            keys = [key async for key in raw.scan_iter(match=prefix + ":*", count=1000)]
            for start in range(0, len(keys), 500):
                await raw.delete(*keys[start : start + 500])
    finally:
        await client.aclose()
        await raw.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--per-user", type=int, nargs="+", default=[1, 10, 100, 1000])
    args = parser.parse_args()
    with redis_url() as url:
        asyncio.run(run(url, args.calls, args.per_user))


if __name__ == "__main__":
    main()
