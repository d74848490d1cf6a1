"""Sweep cost against the number of live sessions (not a test: it prints figures).

The store promises that a sweep costs O(expired), not O(all sessions). This script
expires the same number of due sessions in a store holding 10k live sessions
and in one holding 1M, and prints the times and their ratio (near 1 means the
live sessions cost the sweep nothing). Each store has its own private Redis
started here; the sweeps of the two alternate, repeat after repeat, so both
see the same machine load. Three figures per sweep: the wall time seen by the
client, and the Redis server's own time in the sweep scripts (INFO
commandstats), which other processes on a shared machine disturb less, and
the Redis process's CPU time (INFO cpu), which they disturb least (time the
server waits for a core is not counted).

    .venv/bin/python benchmarks/sweep_cost.py [--due 10000] [--repeats 5] [--early]

With ``--early`` the sweeps meet no due session but `due` active ones whose index
entries came due early (a slide never moves the entry, so the entry of a session
that was active since it was written comes due before the record's deadline):
each visit reads the record and puts the entry at its deadline. The figures are
then the cost of such a visit, which a session kept active pays once per idle
timeout of activity.

Sessions are loaded with the real ``create`` script, pipelined in chunks. After
each measured sweep the tombstones it wrote are dropped, so every repeat starts
from the same keyspace (see `drop_tombstones`).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from contextlib import ExitStack
from datetime import timedelta

from sessionstore import (
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
    new_session_id,
    sweep_store,
)
from sessionstore._scripts import Arg, Batch
from sessionstore.store._lua import script
from sessionstore.store._payload import encode_metadata
from sessionstore.testing import LocalRedis

CHUNK = 5000


async def load(store: SessionStore, count: int, idle: timedelta) -> list[str]:
    """Create `count` sessions with pipelined create scripts; their ids."""
    cfg = store.settings
    common: list[Arg] = [
        max(1, int(idle.total_seconds() * 1000)),
        int(cfg.absolute_lifetime.total_seconds() * 1000),
        int(cfg.sweep_grace.total_seconds() * 1000),
        cfg.events_maxlen,
        "",
        "",
        encode_metadata(None, cfg),
    ]
    create = script("create")
    made: list[str] = []
    for start in range(0, count, CHUNK):
        batch = Batch(store.redis)
        for _ in range(min(CHUNK, count - start)):
            session_id = new_session_id(secrets.randbelow(cfg.shards))
            batch.script(create, store.keys.session(session_id).ordered(), [session_id, *common])
            made.append(session_id)
        await batch.execute()
    return made


async def drop_tombstones(store: SessionStore, ids: list[str]) -> None:
    """Drop the tombstones a sweep of `ids` wrote. In production tombstones lapse about
    as fast as they are written; here each sweep would add `due` keys for good, the
    keyspace would grow repeat after repeat, and the table resize it crosses (a rehash
    of every key, spread over the commands that follow) would land in one repeat of one
    store. Dropped outside the measured sweep, so each repeat starts from the same
    keyspace."""
    for start in range(0, len(ids), CHUNK):
        batch = Batch(store.redis)
        for session_id in ids[start : start + CHUNK]:
            batch.command("DEL", store.keys.session(session_id).tombstone)
        await batch.execute()


async def wait_overdue(store: SessionStore, count: int) -> None:
    """Until the due sessions are all past their 1 ms deadline (a few ms)."""
    for _ in range(1000):
        if (await store.counts()).overdue >= count:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError("due sessions never became overdue")


async def script_usec(store: SessionStore) -> int:
    """Microseconds the server has spent in EVALSHA calls so far."""
    stats = await store.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def redis_cpu(store: SessionStore) -> float:
    """Seconds of CPU (user + system) the Redis process has used so far."""
    info = await store.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def make_early(store: SessionStore, ids: list[str]) -> None:
    """Make the sessions `ids` (their entries due already) active for an hour: their
    records' idle deadlines move, their index entries stay, as after slides."""
    seconds, _ = await store.redis.time()
    later = (int(seconds) + 3600) * 1000
    for start in range(0, len(ids), CHUNK):
        batch = Batch(store.redis)
        for session_id in ids[start : start + CHUNK]:
            batch.command("HSET", store.keys.session(session_id).record, "idle_end", later)
        await batch.execute()


async def drop_sessions(store: SessionStore, ids: list[str]) -> None:
    """End the active sessions `ids` (records and index entries), then drop their
    tombstones."""
    cfg = store.settings
    for start in range(0, len(ids), CHUNK):
        batch = Batch(store.redis)
        for session_id in ids[start : start + CHUNK]:
            args: list[Arg] = [session_id, "closed", "deleted", "deleted", 1000, cfg.events_maxlen]
            batch.script(script("end"), store.keys.session(session_id).ordered(), args)
        await batch.execute()
    await drop_tombstones(store, ids)


async def sweep_once(
    store: SessionStore, live: int, due: int, early: bool = False
) -> tuple[float, float, float]:
    """Load `due` sessions, let them come due, sweep them: (wall s, server s, Redis CPU s).
    Early: `due` active sessions whose entries came due early, each put back."""
    if early:
        ids = await load(store, due, timedelta(milliseconds=1))
        await wait_overdue(store, due)
        await make_early(store, ids)
    else:
        ids = await load(store, due, timedelta(milliseconds=1))
        await wait_overdue(store, due)
    server_before, cpu_before = await script_usec(store), await redis_cpu(store)
    started = time.perf_counter()
    report = await sweep_store(store, batch=500, max_sessions=10 * due)
    wall = time.perf_counter() - started
    server = (await script_usec(store) - server_before) / 1e6
    cpu = await redis_cpu(store) - cpu_before
    if early:
        assert report.rescheduled == due and report.expired == 0, report
        await drop_sessions(store, ids)
    else:
        assert report.expired == due and report.still_due == 0, report
        await drop_tombstones(store, ids)
    assert (await store.counts()).active == live
    return wall, server, cpu


def line(label: str, values: list[float], due: int) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{label}: median {statistics.median(ms):7.1f} ms, min {min(ms):7.1f} ms"
        f" ({statistics.median(values) / due * 1e6:5.1f} us per session)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--due", type=int, default=10_000, help="sessions expired per sweep")
    parser.add_argument("--repeats", type=int, default=5, help="sweeps per store")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument(
        "--live", type=int, nargs=2, default=[10_000, 1_000_000], metavar=("SMALL", "LARGE")
    )
    parser.add_argument(
        "--early", action="store_true", help="sweep entries that came due early (re-indexes)"
    )
    args = parser.parse_args()
    sizes = args.live
    print(
        f"{args.due:,} due sessions per sweep, {args.shards} shards, batch 500, "
        f"{args.repeats} sweeps per store, stores of {sizes[0]:,} and {sizes[1]:,} live sessions"
        + (" (early entries of active sessions: each visit a re-index)" if args.early else "")
    )
    with ExitStack() as servers:
        stores = {}
        for live in sizes:
            server = servers.enter_context(LocalRedis())
            url = RedisSettings.from_dsn(server.url, socket_timeout=timedelta(seconds=60))
            store = SessionStore(create_client(url), SessionSettings(shards=args.shards))
            await store.load_scripts()
            started = time.perf_counter()
            await load(store, live, timedelta(hours=1))
            print(f"loaded {live:>9,} live sessions in {time.perf_counter() - started:6.1f} s")
            stores[live] = store
        wall: dict[int, list[float]] = {live: [] for live in sizes}
        server_time: dict[int, list[float]] = {live: [] for live in sizes}
        cpu_time: dict[int, list[float]] = {live: [] for live in sizes}
        try:
            for _ in range(args.repeats):
                for live, store in stores.items():
                    took, in_redis, cpu = await sweep_once(store, live, args.due, args.early)
                    wall[live].append(took)
                    server_time[live].append(in_redis)
                    cpu_time[live].append(cpu)
        finally:
            for store in stores.values():
                await store.redis.aclose()
    for live in sizes:
        print(f"{live:>9,} live  " + line("wall", wall[live], args.due))
        print(f"{'':>9}       " + line("in Redis", server_time[live], args.due))
        print(f"{'':>9}       " + line("Redis CPU", cpu_time[live], args.due))
    small, large = sizes
    for label, figures in (("wall", wall), ("in Redis", server_time), ("Redis CPU", cpu_time)):
        ratio = statistics.median(figures[large]) / statistics.median(figures[small])
        print(f"ratio {large:,} / {small:,} live, {label} (medians): {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
