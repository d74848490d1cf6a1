"""IMAP operations through the upstream pool, beside the bare connection, in one run.

Starts a private Dovecot (Debian's dovecot-imapd) and a private Redis (or uses
SESSIONSTORE_REDIS_URL), then runs the same STATUS command (``get_email_count``)

- on a bare `ImapConnection` (connector timeouts and BYE watch only), and
- through `UpstreamPool` / `ImapClient` (lock, checkout, breaker gate,
  classification, throttled record writes),

for the same number of sessions, each with its own connection, and prints
operations per second, their ratio, Redis round trips per pooled operation
(the steady state should be zero), and the cost of a reconnect after a kick.

    python benchmarks/upstream_pool.py [--ops 2000] [--sessions 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parents[1]))

from _common import SENDS, redis_url

from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client
from sessionstore.upstream import (
    Credentials,
    EnvCredentials,
    ImapClient,
    UpstreamPool,
    UpstreamSettings,
)
from sessionstore.upstream.imap import ImapConnection, ImapConnector
from tests.upstream.conftest import imap_spec
from tests.upstream.dovecot import Dovecot

PASSWORD = "bench-secret"  # noqa: S105  (a throw-away account of a private test server)


async def bare(connector: ImapConnector, server: Dovecot, ops: int, sessions: int) -> float:
    """Operations per second on bare connections, one per session."""
    conns: list[ImapConnection] = [
        await connector.connect(imap_spec(server), SecretStr(PASSWORD)) for _ in range(sessions)
    ]
    per = ops // sessions

    async def run(conn: ImapConnection) -> None:
        for _ in range(per):
            await conn.get_email_count()

    for conn in conns:  # warm up like the pooled run (first STATUS of each server process)
        await conn.get_email_count()
    start = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    elapsed = time.perf_counter() - start
    for conn in conns:
        await connector.close(conn)
    return per * sessions / elapsed


async def pooled(
    pool: UpstreamPool, store: SessionStore, server: Dovecot, ops: int, sessions: int
) -> tuple[float, float, float]:
    """(ops per second, Redis round trips per op, seconds for the call after a kick)."""
    clients = []
    for _ in range(sessions):
        session = await store.create()
        await pool.register(session.id, imap_spec(server), credential_ref="env:BENCH_PASSWORD")
        client = ImapClient(pool, session.id)
        await client.get_email_count()  # open the connection, write the first record
        clients.append(client)
    per = ops // sessions

    async def run(client: ImapClient) -> None:
        for _ in range(per):
            await client.get_email_count()

    SENDS.clear()
    start = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    elapsed = time.perf_counter() - start
    trips = SENDS["n"] / (per * sessions)
    first = pool.entry(clients[0].session_id, "mail").connection
    server.kick("testuser")
    await asyncio.wait_for(first.wait_dropped(), 10)  # the BYE push has arrived
    start = time.perf_counter()
    await clients[0].get_email_count()
    reconnect = time.perf_counter() - start
    return per * sessions / elapsed, trips, reconnect


async def main(ops: int, sessions: int, rounds: int) -> None:
    """Run both measurements and print the figures."""
    server = Dovecot({"testuser": PASSWORD})
    server.deliver("testuser", 10)
    server.start()
    try:
        with redis_url() as url:
            redis = create_client(RedisSettings.from_dsn(url))
            store = SessionStore(redis, SessionSettings(key_prefix="bench-upstream", shards=4))
            settings = UpstreamSettings.for_profile("stable")
            connector = ImapConnector.from_settings(settings)
            credentials = Credentials(providers=[EnvCredentials({"BENCH_PASSWORD": PASSWORD})])
            bares, pools = [], []
            for _ in range(rounds):  # alternate, then take medians: the machine is shared
                bares.append(await bare(connector, server, ops, sessions))
                async with UpstreamPool(
                    store,
                    connectors=[connector],
                    credentials=credentials,
                    settings=settings,
                    maintain_every=None,
                ) as pool:
                    pools.append(await pooled(pool, store, server, ops, sessions))
            await redis.aclose()
    finally:
        server.remove()
    baseline = statistics.median(bares)
    rate = statistics.median(p[0] for p in pools)
    trips = max(p[1] for p in pools)
    reconnect = statistics.median(p[2] for p in pools)
    print(
        f"IMAP STATUS, {ops} operations over {sessions} sessions (one connection each), "
        f"median of {rounds} alternating rounds"
    )
    print(f"  bare ImapConnection      {baseline:9.0f} ops/s")
    print(f"  UpstreamPool/ImapClient  {rate:9.0f} ops/s   ratio {rate / baseline:.2f}")
    print(f"  Redis round trips per pooled operation (worst round): {trips:.4f}")
    print(f"  first call after a kick (BYE, reconnect, login, STATUS): {reconnect * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.sessions, args.rounds))
