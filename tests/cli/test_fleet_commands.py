"""`sessionstore worker`, `sessionstore workers` and `sessionstore events tail` (in process)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from sessionstore import (
    Heartbeat,
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
    publish_heartbeat,
)
from sessionstore.cli import app
from sessionstore.testing import free_port
from tests.bulk import create_many


@pytest.fixture
def cli_env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {
        "SESSIONSTORE_REDIS_URL": redis_url,
        "SESSIONSTORE_KEY_PREFIX": key_prefix,
        "SESSIONSTORE_SHARDS": "4",
    }


def _with_store(url: str, prefix: str, action: object) -> object:
    async def run() -> object:
        client = create_client(RedisSettings.from_dsn(url))
        try:
            store = SessionStore(client, SessionSettings(key_prefix=prefix, shards=4))
            return await action(store)  # type: ignore[operator]
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_worker_without_a_store_url_exits_2_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SESSIONSTORE_REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["worker", "--burst"])
    assert result.exit_code == 2
    assert "SESSIONSTORE_REDIS_URL is not set" in result.output


def test_worker_with_a_bad_setting_exits_2(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "SESSIONSTORE_SWEEP_INTERVAL": "7"}
    result = CliRunner().invoke(app, ["worker", "--burst"], env=env)
    assert result.exit_code == 2
    assert "sweep_interval must divide" in result.output


def test_workers_lists_live_and_dead_workers(
    cli_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    """--json for scripts; the table by default flags the dead worker."""

    async def beat(store: SessionStore) -> None:
        for worker_id in ("alive-1", "dead-1"):
            hb = Heartbeat(worker_id=worker_id, host="box", pid=10, queue="q", jobs_run=3)
            await publish_heartbeat(store.redis, store.keys, hb, ttl=timedelta(minutes=5))
        await store.redis.hset(store.keys.worker("dead-1"), "last_beat", 1_000)

    _with_store(redis_url, key_prefix, beat)
    result = CliRunner().invoke(app, ["workers", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    states = {w["id"]: w["state"] for w in json.loads(result.output)}
    assert states == {"alive-1": "live", "dead-1": "dead"}

    table = CliRunner().invoke(app, ["workers"], env={**cli_env, "COLUMNS": "200"})
    assert table.exit_code == 0
    assert "alive-1" in table.output and "dead" in table.output and "live" in table.output


def test_workers_check_says_whether_one_worker_is_live(
    cli_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    """--check ID: exit 0 for a live worker, 1 for a dead, stopped or unknown one."""

    async def beat(store: SessionStore) -> None:
        for worker_id in ("up-1", "down-1", "done-1"):
            hb = Heartbeat(worker_id=worker_id, host="box", pid=10, queue="q")
            hb.stopped = worker_id == "done-1"
            await publish_heartbeat(store.redis, store.keys, hb, ttl=timedelta(minutes=5))
        await store.redis.hset(store.keys.worker("down-1"), "last_beat", 1_000)

    _with_store(redis_url, key_prefix, beat)
    answers = {
        worker_id: CliRunner().invoke(app, ["workers", "--check", worker_id], env=cli_env)
        for worker_id in ("up-1", "down-1", "done-1", "nobody")
    }
    assert {w: (r.exit_code, r.output.strip()) for w, r in answers.items()} == {
        "up-1": (0, "up-1: live"),
        "down-1": (1, "down-1: dead"),
        "done-1": (1, "done-1: stopped"),
        "nobody": (1, "nobody: unknown"),
    }


def test_workers_with_redis_down_exits_3(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "SESSIONSTORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = CliRunner().invoke(app, ["workers"], env=env)
    assert result.exit_code == 3
    assert "unavailable" in result.output.lower()


def test_events_tail_prints_json_lines_from_the_start(
    cli_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    async def make(store: SessionStore) -> list[str]:
        ids = await create_many(store, 3)
        await store.delete(ids[0])
        return ids

    ids: list[str] = _with_store(redis_url, key_prefix, make)  # type: ignore[assignment]
    result = CliRunner().invoke(
        app, ["events", "tail", "--from", "0", "--limit", "4", "--json"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert sorted((e["kind"], e["session_id"]) for e in events) == sorted(
        [("created", i) for i in ids] + [("deleted", ids[0])]
    )
    assert all(e["id"] == f"{e['shard']}:{e['entry_id']}" for e in events)


def test_events_tail_human_lines_and_consumer_group(
    cli_env: dict[str, str], redis_url: str, key_prefix: str
) -> None:
    """The default output is one readable line per event; --group acknowledges them."""
    ids: list[str] = _with_store(  # type: ignore[assignment]
        redis_url, key_prefix, lambda store: create_many(store, 2)
    )
    result = CliRunner().invoke(
        app,
        ["events", "tail", "--from", "0", "--limit", "2", "--group", "ops"],
        env=cli_env,
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert all(" created " in line and line.endswith("]") for line in lines)
    assert {line.split()[2] for line in lines} == set(ids)

    async def pending(store: SessionStore) -> int:
        total = 0
        for shard in range(4):
            total += (await store.redis.xpending(store.keys.events(shard), "ops"))["pending"]
        return total

    assert _with_store(redis_url, key_prefix, pending) == 0


def test_events_tail_refuses_a_bad_position(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["events", "tail", "--from", "yesterday"], env=cli_env)
    assert result.exit_code == 2
    assert "event id" in result.output
