"""The examples under examples/ work as docs/security.md says, against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from examples.my_sessions import create_app, handle
from sessionstore import RedisSettings, SessionSettings, SessionStore, create_client
from tests.serving import serving

HEADER = "Mcp-Session-Id"


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[SessionStore]:
    client = create_client(RedisSettings.from_dsn(redis_url))
    yield SessionStore(client, SessionSettings(key_prefix=key_prefix, shards=4))
    await client.aclose()


async def login(http: httpx.AsyncClient, user: str, client: str) -> str:
    answer = await http.post("/login", json={"user": user, "client": client})
    assert answer.status_code == 201, answer.text
    return answer.headers[HEADER]


async def test_my_sessions_lists_only_the_callers_user_without_ids(store: SessionStore) -> None:
    """Alice's two sessions list each other by handle, never by id; Bob's are not there;
    Alice ends her phone session by its handle, and Bob cannot end one of hers."""
    async with serving(create_app(store)) as (http, _):
        laptop = await login(http, "alice", "laptop")
        phone = await login(http, "alice", "phone")
        bob = await login(http, "bob", "laptop")
        listed = await http.get("/me/sessions", headers={HEADER: laptop})
        anonymous = await http.get("/me/sessions")
        bobs_try = await http.delete(f"/me/sessions/{handle(phone)}", headers={HEADER: bob})
        ended = await http.delete(f"/me/sessions/{handle(phone)}", headers={HEADER: laptop})
        after = await http.get("/me/sessions", headers={HEADER: laptop})
    assert listed.status_code == 200
    rows = listed.json()
    assert sorted(r["client"] for r in rows) == ["laptop", "phone"]
    assert [r["this_one"] for r in rows if r["client"] == "laptop"] == [True]
    for session_id in (laptop, phone, bob):
        assert session_id not in listed.text
    assert anonymous.status_code == 400
    assert bobs_try.status_code == 404
    assert ended.status_code == 204
    assert [r["client"] for r in after.json()] == ["laptop"]
    assert (await store.lookup(phone)).status.value == "closed"
