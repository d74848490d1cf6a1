"""``sessionstore upstreams``: operators read records; exit codes say what went wrong."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client
from sessionstore.cli import app
from sessionstore.upstream import SecretBox, StoredCredential, UpstreamRecords, UpstreamState
from tests.upstream.fakes import spec


async def _session_with_a_record(url: str, prefix: str, *, end: bool = False) -> str:
    client = create_client(RedisSettings.from_dsn(url))
    try:
        store = SessionStore(client, SessionSettings(key_prefix=prefix, shards=4))
        session = await store.create()
        records = UpstreamRecords(store)
        await records.register(session.id, spec(), StoredCredential(ref="env:X"))
        await records.update(
            session.id,
            "mail",
            state=UpstreamState.RECONNECTING,
            error="refused: x",
            attempts="incr",
        )
        if end:
            await store.delete(session.id)
        return session.id
    finally:
        await client.aclose()


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> dict[str, str]:
    """The CLI's environment: this test's Redis and key prefix."""
    return {
        "SESSIONSTORE_REDIS_URL": redis_url,
        "SESSIONSTORE_KEY_PREFIX": key_prefix,
        "SESSIONSTORE_SHARDS": "4",
    }


def test_show_prints_the_records(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """`show --json` prints each record; the table names the state and the error."""
    sid = asyncio.run(_session_with_a_record(redis_url, key_prefix))
    runner = CliRunner()
    result = runner.invoke(app, ["upstreams", "show", sid, "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows["mail"]["state"] == "reconnecting" and rows["mail"]["attempts"] == 1
    table = runner.invoke(app, ["upstreams", "show", sid], env=env | {"COLUMNS": "200"})
    assert table.exit_code == 0 and "reconnecting" in table.output


def test_show_exit_codes(env: dict[str, str], redis_url: str, key_prefix: str) -> None:
    """1 for an ended session, 2 for a malformed id or bad settings, 3 when Redis is
    unreachable."""
    ended = asyncio.run(_session_with_a_record(redis_url, key_prefix, end=True))
    runner = CliRunner()
    gone = runner.invoke(app, ["upstreams", "show", ended], env=env)
    assert gone.exit_code == 1 and "closed" in gone.output
    assert runner.invoke(app, ["upstreams", "show", "not-an-id"], env=env).exit_code == 2
    down = env | {"SESSIONSTORE_REDIS_URL": "redis://127.0.0.1:1/0"}
    assert runner.invoke(app, ["upstreams", "show", ended], env=down).exit_code == 3
    bad = runner.invoke(app, ["upstreams", "show", ended], env=env | {"SESSIONSTORE_SHARDS": "0"})
    assert bad.exit_code == 2 and "bad SESSIONSTORE_* setting" in bad.output
    unset = runner.invoke(
        app, ["upstreams", "show", ended], env=env | {"SESSIONSTORE_REDIS_URL": ""}
    )
    assert unset.exit_code == 2 and "SESSIONSTORE_REDIS_URL is not set" in unset.output


def test_new_key_prints_a_fernet_key() -> None:
    """The printed key works in a SecretBox."""
    result = CliRunner().invoke(app, ["upstreams", "new-key"])
    assert result.exit_code == 0
    SecretBox([result.output.strip()])
