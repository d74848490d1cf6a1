"""Store operations per second and round trips per operation, beside raw redis-py.

The baseline does the same Redis work with plain commands in one pipeline
(no validation, no atomicity, no tombstone or event): HSET/ZADD/PEXPIRE for
create, HGETALL for get, and so on. Both run in the same process, against the
same server, in the same run, so the ratio is what the store's guarantees cost.

    python benchmarks/store_ops.py [--ops 5000] [--concurrency 32]

Uses SESSIONSTORE_REDIS_URL if set, else starts a private server.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Awaitable, Callable

from _common import measure, redis_url

from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client


async def run(url: str, ops: int, concurrency: int) -> None:
    client = create_client(RedisSettings.from_dsn(url))
    prefix = "bench" + secrets.token_hex(3)
    store = SessionStore(client, SessionSettings(key_prefix=prefix, max_requests_per_session=0))
    await store.load_scripts()
    ids = [(await store.create(user_id="bench")).id for _ in range(ops)]
    raw_keys = [f"{prefix}raw:{{{i % 16}}}:session:{i}" for i in range(ops)]

    async def raw_create(i: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hset(
            raw_keys[i],
            mapping={
                "id": i,
                "user_id": "bench",
                "created": 1,
                "last_activity": 1,
                "idle_end": 2,
                "life_end": 3,
                "version": 1,
            },
        )
        pipe.zadd(f"{prefix}raw:{{{i % 16}}}:expiry", {str(i): 2})
        pipe.pexpire(raw_keys[i], 3_600_000)
        pipe.zadd(f"{prefix}raw:user:bench", {str(i): 3})
        await pipe.execute()

    async def raw_touch(i: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hset(raw_keys[i], mapping={"last_activity": 2, "idle_end": 3})
        pipe.zadd(f"{prefix}raw:{{{i % 16}}}:expiry", {str(i): 3})
        pipe.pexpire(raw_keys[i], 3_600_000)
        await pipe.execute()

    async def store_track(i: int) -> None:
        async with store.track_request(ids[i]):
            pass

    async def raw_track(i: int) -> None:
        key = raw_keys[i] + ":requests"
        await client.zadd(key, {"r": 1})
        await client.zrem(key, "r")

    async def store_lock(i: int) -> None:
        lock = store.lock(ids[i])
        await lock.acquire(blocking=False)
        await lock.release()

    async def raw_lock(i: int) -> None:
        await client.set(raw_keys[i] + ":lock", "me", nx=True, px=30_000)
        await client.delete(raw_keys[i] + ":lock")

    cases: list[
        tuple[str, Callable[[int], Awaitable[object]], Callable[[int], Awaitable[object]]]
    ] = [
        ("create (with user index)", lambda i: store.create(user_id="bench"), raw_create),
        ("get", lambda i: store.get(ids[i]), lambda i: client.hgetall(raw_keys[i])),
        ("touch", lambda i: store.touch(ids[i]), raw_touch),
        (
            "set_state (1 attribute)",
            lambda i: store.set_state(ids[i], {"n": i}),
            lambda i: client.hset(raw_keys[i], "a:n", str(i)),
        ),
        ("track_request (begin+end)", store_track, raw_track),
        ("lock acquire+release", store_lock, raw_lock),
    ]
    print(f"redis: {url}   ops per case: {ops}   concurrency: {concurrency}")
    header = (
        f"{'operation':28} {'store ops/s':>12} {'raw ops/s':>11} {'ratio':>6} "
        f"{'store RT/op':>12} {'raw RT/op':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, store_op, raw_op in cases:
        await measure(min(200, ops), concurrency, raw_op)  # warm both paths
        await measure(min(200, ops), concurrency, store_op)
        raw_rate, raw_rt = await measure(ops, concurrency, raw_op)
        store_rate, store_rt = await measure(ops, concurrency, store_op)
        print(
            f"{name:28} {store_rate:12.0f} {raw_rate:11.0f} {store_rate / raw_rate:6.2f} "
            f"{store_rt:12.2f} {raw_rt:10.2f}"
        )
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with redis_url() as url:
        asyncio.run(run(url, args.ops, args.concurrency))


if __name__ == "__main__":
    main()
