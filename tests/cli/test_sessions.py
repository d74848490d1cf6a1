"""``sessionstore sessions ...`` and ``sessionstore health`` against a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import pytest
from typer.testing import CliRunner, Result

from sessionstore import (
    Heartbeat,
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
    publish_heartbeat,
)
from sessionstore.breaker import BreakerAdmin
from sessionstore.cli import app
from sessionstore.testing import free_port
from sessionstore.upstream import StoredCredential, UpstreamRecords, UpstreamSpec, UpstreamState

T = TypeVar("T")


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {
        "SESSIONSTORE_REDIS_URL": redis_url,
        "SESSIONSTORE_KEY_PREFIX": key_prefix,
        "SESSIONSTORE_SHARDS": "4",
    }


def with_store(
    redis_url: str, key_prefix: str, action: Callable[[SessionStore], Awaitable[T]]
) -> T:
    """Run `action` on a store of the test's prefix (sync tests: the CLI runs its own loop)."""

    async def run() -> T:
        client = create_client(RedisSettings.from_dsn(redis_url))
        try:
            return await action(
                SessionStore(client, SessionSettings(key_prefix=key_prefix, shards=4))
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def test_list_by_user_json(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """--user lists that user's active sessions; --json is machine-readable."""

    async def make(store: SessionStore) -> list[str]:
        made = [await store.create(user_id="ann") for _ in range(2)]
        await store.create(user_id="bob")
        return [m.id for m in made]

    ids = with_store(redis_url, key_prefix, make)
    result = invoke(env, "sessions", "list", "--user", "ann", "--json")
    assert result.exit_code == 0, result.output
    assert {row["id"] for row in json.loads(result.stdout)} == set(ids)


def test_list_by_status(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """Each status lists exactly its ids: active and overdue from the indexes, ended ones
    from the event streams."""

    async def make(store: SessionStore) -> dict[str, str]:
        active = await store.create()
        overdue = await store.create(idle_timeout=timedelta(milliseconds=1))
        expired = await store.create()
        await store.expire(expired.id)
        closed = await store.create()
        await store.delete(closed.id)
        rotated = await store.create()
        await store.rotate(rotated.id)
        return {"active": active.id, "overdue": overdue.id, "expired": expired.id,
                "closed": closed.id, "rotated": rotated.id}  # fmt: skip

    ids = with_store(redis_url, key_prefix, make)
    listed = {}
    for status in ("active", "expired", "closed", "rotated"):
        result = invoke(env, "sessions", "list", "--status", status, "--json")
        assert result.exit_code == 0, result.output
        listed[status] = {row["id"] for row in json.loads(result.stdout)}
    assert ids["active"] in listed["active"] and ids["overdue"] not in listed["active"]
    assert listed["expired"] == {ids["overdue"], ids["expired"]}
    assert listed["closed"] == {ids["closed"]}
    assert listed["rotated"] == {ids["rotated"]}


def test_list_table_is_human(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """Without --json the list is a table with the session's id and user."""
    with_store(redis_url, key_prefix, lambda store: store.create(user_id="tab"))
    result = invoke(env, "sessions", "list", "--user", "tab")
    assert result.exit_code == 0 and "tab" in result.stdout and "status" in result.stdout


def test_show_expire_delete(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """show prints the record and its keys; expire and delete act; acting twice exits 1."""
    made = with_store(redis_url, key_prefix, lambda store: store.create(state={"n": 1}))
    shown = invoke(env, "sessions", "show", made.id, "--json")
    assert shown.exit_code == 0
    body = json.loads(shown.stdout)
    assert body["state"] == {"n": 1} and body["keys"]["record"].startswith(key_prefix + ":")
    assert "redis-cli HGETALL" in invoke(env, "sessions", "show", made.id).stdout
    assert invoke(env, "sessions", "expire", made.id).exit_code == 0
    again = invoke(env, "sessions", "delete", made.id)
    assert again.exit_code == 1 and "already ended" in again.stderr
    status = json.loads(invoke(env, "sessions", "show", made.id, "--json").stdout)["status"]
    assert status == "expired"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("sessions", "show", "0.AAAAAAAAAAAAAAAAAAAAAAAA"), 1),
        (("sessions", "show", "not-an-id"), 2),
        (("sessions", "list", "--user", "a", "--status", "closed"), 2),
    ],
)
def test_exit_codes_for_failures(env: dict[str, str], args: tuple[str, ...], code: int) -> None:
    """Not found exits 1, bad usage 2, each with a message on stderr."""
    result = invoke(env, *args)
    assert result.exit_code == code
    assert result.stderr


def test_missing_url_exits_2(env: dict[str, str]) -> None:
    """Without SESSIONSTORE_REDIS_URL the command says what to set."""
    result = invoke({**env, "SESSIONSTORE_REDIS_URL": ""}, "health")
    assert result.exit_code == 2 and "SESSIONSTORE_REDIS_URL" in result.stderr


def test_redis_down_exits_3(env: dict[str, str]) -> None:
    """An unreachable Redis exits 3 with a clear message."""
    dead = {**env, "SESSIONSTORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = invoke(dead, "sessions", "list", "--user", "ann")
    assert result.exit_code == 3 and "unavailable" in result.stderr


def test_health_reports_counts(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """health prints the store's counts; exit 0 while the sweeper keeps up."""
    with_store(redis_url, key_prefix, lambda store: store.create())
    result = invoke(env, "health", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["active"] == 1 and report["status"] == "healthy"
    assert report["redis_latency_ms"] > 0


def test_health_exits_1_when_degraded(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """An overdue session beyond the allowed lag makes health exit 1."""
    with_store(
        redis_url, key_prefix, lambda store: store.create(idle_timeout=timedelta(milliseconds=1))
    )
    result = invoke({**env, "SESSIONSTORE_HEALTH_MAX_SWEEPER_LAG": "0"}, "health")
    assert result.exit_code == 1 and "degraded" in result.stdout


def test_health_shows_workers_and_names_an_unswept_backlog(
    env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    """health lists the live workers from their heartbeats; with sessions overdue past
    the lag and no live worker it says so and exits 1."""

    async def overdue_and_a_worker(store: SessionStore) -> None:
        await store.create(idle_timeout=timedelta(milliseconds=1))
        beat = Heartbeat(worker_id="w-cli", host="box", pid=9, queue="q")
        beat.reports["sweep"] = {"at": "2025-01-01T00:00:00+00:00", "expired": 3}
        await publish_heartbeat(store.redis, store.keys, beat, ttl=timedelta(minutes=5))

    with_store(redis_url, key_prefix, overdue_and_a_worker)
    staffed = invoke(env, "health", "--json")
    report = json.loads(staffed.stdout)
    assert staffed.exit_code == 0, staffed.output
    assert report["live_workers"] == ["w-cli"] and report["last_sweep"]["expired"] == 3
    with_store(redis_url, key_prefix, lambda store: store.redis.delete(store.keys.worker_index()))
    alone = invoke({**env, "SESSIONSTORE_HEALTH_MAX_SWEEPER_LAG": "0"}, "health", "--json")
    assert alone.exit_code == 1 and "no live worker" in json.loads(alone.stdout)["problem"]


def test_health_shows_breakers_and_upstream_counters(
    env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    """health counts the fleet's breakers by state and names those not closed (an open one
    does not make the store degraded, as in /session-health), and shows the fleet-wide
    upstream counters."""

    async def isolate_and_fail(store: SessionStore) -> None:
        admin = BreakerAdmin(store.redis, key_prefix=key_prefix)
        await admin.force_open("imap:imap.example.com:993", actor="ops", reason="incident")
        await admin.reset("imap:other.example.com:993", actor="ops")
        session = await store.create()
        records = UpstreamRecords(store)
        spec = UpstreamSpec(name="mail", host="imap.example.com", port=993, username="u")
        await records.register(session.id, spec, StoredCredential(ref="env:X"))
        await records.update(session.id, "mail", state=UpstreamState.RECONNECTING, attempts="incr")

    with_store(redis_url, key_prefix, isolate_and_fail)
    result = invoke(env, "health", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    breakers = report["breakers"]
    assert breakers["known"] == 2
    assert (breakers["by_state"]["forced_open"], breakers["by_state"]["closed"]) == (1, 1)
    assert breakers["not_closed"] == [
        {"name": "imap:imap.example.com:993", "state": "forced_open", "cause": "force_open",
         "actor": "ops"}
    ]  # fmt: skip
    assert report["upstreams"]["registered"] == 1
    assert report["upstreams"]["reconnect_attempts"] == {"failed": 1, "succeeded": 0}
    table = invoke({**env, "COLUMNS": "200"}, "health")
    assert "imap:imap.example.com:993 forced_open (force_open by ops)" in table.stdout
    assert "reconnect attempts: 1 failed" in table.stdout


def test_keys_user_prints_the_line_that_reads_the_users_index_entry(
    env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    """`sessionstore keys --user` names the hash and field of one user's entry (which
    of the shared hashes is not guessable); a bad user id exits 2 with the reason."""
    made = with_store(redis_url, key_prefix, lambda store: store.create(user_id="kit"))
    printed = invoke(env, "keys", "--user", "kit")
    assert printed.exit_code == 0, printed.output
    entry, own = printed.stdout.splitlines()
    command, key, field = entry.split()
    assert command == "HGET" and field == "'kit'"
    assert own.startswith(f"ZRANGE {key[:-1]}:kit' 0 -1")

    async def read(store: SessionStore) -> object:
        return await store.redis.hget(key.strip("'"), "kit")

    assert with_store(redis_url, key_prefix, read) == made.id
    refused = invoke(env, "keys", "--user", "no spaces")
    assert refused.exit_code == 2 and "user_id" in refused.output
