"""The reference server's session API, in-process against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sessionstore import SessionStore, Settings
from sessionstore.server import create_app
from tests.serving import serving

#: These tests serve an app on the standalone Redis (`redis_url`); the store matches it.
pytestmark = pytest.mark.standalone

TOKEN = "health-t0ken"
SERVICE_TOKEN = "service-t0ken"
#: These tests call the API as a backend service does (the access model is in
#: test_server_access.py).
SERVICE_AUTH = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def server_settings(redis_url: str, key_prefix: str, **extra: Any) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        shards=4,
        health_token=SecretStr(TOKEN),
        service_tokens=SecretStr(SERVICE_TOKEN),
        **extra,
    )


@pytest.fixture
async def http(redis_url: str, key_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(server_settings(redis_url, key_prefix))
    async with serving(app, headers=SERVICE_AUTH) as (client, _):
        yield client


async def create(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    answer = await http.post("/sessions", json=body)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_create_then_read(http: httpx.AsyncClient, store: SessionStore) -> None:
    """POST creates in Redis; GET reads it back with its version as a strong ETag."""
    answer = await http.post(
        "/sessions", json={"user_id": "ann", "metadata": {"client": "cli"}, "state": {"n": 1}}
    )
    made = answer.json()
    assert answer.status_code == 201
    assert answer.headers["Location"] == f"/sessions/{made['id']}"
    assert answer.headers["Mcp-Session-Id"] == made["id"]
    read = await http.get(f"/sessions/{made['id']}")
    assert read.json()["state"] == {"n": 1} and read.json()["user_id"] == "ann"
    assert read.headers["ETag"] == '"1"'
    assert (await store.get(made["id"])).metadata == {"client": "cli"}


async def test_if_none_match_gives_304(http: httpx.AsyncClient) -> None:
    """A client holding the current ETag gets 304 and no body."""
    made = await create(http)
    answer = await http.get(f"/sessions/{made['id']}", headers={"If-None-Match": '"1"'})
    assert answer.status_code == 304 and answer.content == b""


async def test_if_match_is_compare_and_set(http: httpx.AsyncClient, store: SessionStore) -> None:
    """A write at the current version wins; one at a stale version gets 412 and changes nothing."""
    made = await create(http, state={"n": 1})
    url = f"/sessions/{made['id']}/state"
    won = await http.patch(url, json={"values": {"n": 2}}, headers={"If-Match": '"1"'})
    lost = await http.patch(url, json={"values": {"n": 3}}, headers={"If-Match": '"1"'})
    assert won.status_code == 200 and won.json()["version"] == 2
    assert won.headers["ETag"] == '"2"'
    assert lost.status_code == 412 and lost.headers["ETag"] == '"2"'
    assert lost.json()["error"] == "version_conflict"
    assert (await store.get(made["id"])).state == {"n": 2}


@pytest.mark.parametrize("header", ['W/"1"', '"1", "2"', "one", '""', "9" * 40])
async def test_bad_if_match_is_400(http: httpx.AsyncClient, header: str) -> None:
    """An If-Match that is not one version is refused before any write."""
    made = await create(http)
    answer = await http.patch(
        f"/sessions/{made['id']}/state", json={"values": {"n": 1}}, headers={"If-Match": header}
    )
    assert answer.status_code == 400


async def test_update_sets_deletes_and_replaces_metadata(
    http: httpx.AsyncClient, store: SessionStore
) -> None:
    """One PATCH sets some attributes, deletes others and replaces the metadata."""
    made = await create(http, state={"a": 1, "b": 2})
    answer = await http.patch(
        f"/sessions/{made['id']}/state",
        json={"values": {"c": [1, 2]}, "delete": ["a"], "metadata": {"m": True}},
    )
    assert answer.status_code == 200
    after = await store.get(made["id"])
    assert after.state == {"b": 2, "c": [1, 2]} and after.metadata == {"m": True}


async def test_delete_then_410_and_second_delete_410(http: httpx.AsyncClient) -> None:
    """Deleting answers 204; the id then answers 410 session_closed, a second delete too."""
    made = await create(http)
    assert (await http.delete(f"/sessions/{made['id']}")).status_code == 204
    read = await http.get(f"/sessions/{made['id']}")
    again = await http.delete(f"/sessions/{made['id']}")
    assert read.status_code == 410 and read.json()["error"] == "session_closed"
    assert again.status_code == 410


async def test_expire_then_resume_gives_a_linked_successor(http: httpx.AsyncClient) -> None:
    """An expired session resumes into a new id linked to the old one; the old id's
    410 never names the new one."""
    made = await create(http, user_id="bo", conversation_id="c1")
    assert (await http.post(f"/sessions/{made['id']}/expire")).status_code == 204
    resumed = await http.post(f"/sessions/{made['id']}/resume")
    body = resumed.json()
    assert resumed.status_code == 200
    assert body["id"] != made["id"] and body["resumed_from"] == made["id"]
    assert body["conversation_id"] == "c1"
    old = await http.get(f"/sessions/{made['id']}")
    assert old.status_code == 410 and body["id"] not in old.text, "no successor to the old id"


async def test_resume_of_an_active_session_is_the_same_session(http: httpx.AsyncClient) -> None:
    """Resuming a live session after a disconnect returns it, state intact."""
    made = await create(http, state={"step": 3})
    resumed = (await http.post(f"/sessions/{made['id']}/resume")).json()
    assert resumed["id"] == made["id"] and resumed["state"] == {"step": 3}


async def test_rotate_moves_the_session_to_a_new_id(http: httpx.AsyncClient) -> None:
    """Rotation keeps the state under a new id; the old id answers 410 session_rotated
    without the new id (an attacker holding the old id must not get the session)."""
    made = await create(http, state={"k": "v"})
    rotated = await http.post(f"/sessions/{made['id']}/rotate")
    new = rotated.json()
    assert new["id"] != made["id"] and new["state"] == {"k": "v"}
    assert rotated.headers["Location"] == f"/sessions/{new['id']}"
    old = (await http.get(f"/sessions/{made['id']}")).json()
    assert old["error"] == "session_rotated" and "superseded_by" not in old, "no successor"


async def test_list_by_user(http: httpx.AsyncClient) -> None:
    """A user's active sessions are listed; another user's are not."""
    first, second = await create(http, user_id="cy"), await create(http, user_id="cy")
    await create(http, user_id="dee")
    listed = (await http.get("/users/cy/sessions")).json()
    assert {s["id"] for s in listed["sessions"]} == {first["id"], second["id"]}


async def test_touch_slides_the_idle_deadline(http: httpx.AsyncClient) -> None:
    """Touch answers the new idle deadline, never earlier than the first."""
    made = await create(http)
    touched = (await http.post(f"/sessions/{made['id']}/touch")).json()
    assert touched["idle_deadline"] >= made["idle_deadline"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"unknown": 1}, 422),
        ({"user_id": "has space"}, 422),
        ({"user_id": "x" * 300}, 422),
        ({"state": {"bad name!": 1}}, 422),
        ({"idle_timeout_seconds": -1}, 422),
        ({"metadata": {"big": "x" * 20_000}}, 413),
        ([1, 2], 422),
    ],
)
async def test_bad_create_bodies_are_clear_4xx(
    http: httpx.AsyncClient, store: SessionStore, body: Any, status: int
) -> None:
    """Unknown fields, bad names and oversized metadata are refused; nothing is created."""
    answer = await http.post("/sessions", json=body)
    assert answer.status_code == status
    assert (await store.counts()).totals["created"] == 0


async def test_state_over_the_store_limit_is_413(http: httpx.AsyncClient) -> None:
    """An attribute over max_attribute_bytes is refused by the store with 413."""
    made = await create(http)
    answer = await http.patch(
        f"/sessions/{made['id']}/state", json={"values": {"big": "x" * 70_000}}
    )
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"


async def test_invalid_json_is_422(http: httpx.AsyncClient) -> None:
    """A body that is not JSON is a 422, never a 500."""
    answer = await http.post(
        "/sessions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422


async def test_nan_in_state_is_refused(http: httpx.AsyncClient) -> None:
    """Python's JSON parser accepts NaN; the store refuses it (422), nothing is written."""
    answer = await http.post(
        "/sessions", content=b'{"state": {"x": NaN}}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422


async def test_declared_oversized_body_is_413_before_reading(
    redis_url: str, key_prefix: str
) -> None:
    """A Content-Length over max_body_bytes is refused at once."""
    app = create_app(server_settings(redis_url, key_prefix, max_body_bytes=4096))
    async with serving(app, headers=SERVICE_AUTH) as (http, _):
        answer = await http.post("/sessions", content=b"x" * 5000)
    assert answer.status_code == 413


async def test_streamed_oversized_body_is_413(redis_url: str, key_prefix: str) -> None:
    """A chunked body is counted as it arrives and refused past the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024

    app = create_app(server_settings(redis_url, key_prefix, max_body_bytes=4096))
    async with serving(app, headers=SERVICE_AUTH) as (http, _):
        answer = await http.post(
            "/sessions", content=chunks(), headers={"content-type": "application/json"}
        )
    assert answer.status_code == 413


async def test_current_session_routes_use_the_header(http: httpx.AsyncClient) -> None:
    """/session answers the session named by the header, 400 without one."""
    made = await create(http)
    current = await http.get("/session", headers={"Mcp-Session-Id": made["id"]})
    missing = await http.get("/session")
    assert current.status_code == 200 and current.json()["id"] == made["id"]
    assert current.json()["active_requests"] == 1, "the request's own lease"
    assert missing.status_code == 400


async def test_wait_answers_when_the_version_moves(http: httpx.AsyncClient) -> None:
    """A long poll past the current version returns at once when a write already landed."""
    made = await create(http)
    await http.patch(f"/sessions/{made['id']}/state", json={"values": {"n": 1}})
    answer = await http.get(
        "/session/wait", params={"after_version": 1}, headers={"Mcp-Session-Id": made["id"]}
    )
    assert answer.json()["changed"] is True and answer.json()["session"]["version"] == 2


async def test_wait_times_out_unchanged(http: httpx.AsyncClient) -> None:
    """With no write, the long poll ends at its timeout with changed=false."""
    made = await create(http)
    answer = await http.get(
        "/session/wait",
        params={"after_version": 1, "timeout": 0.05},
        headers={"Mcp-Session-Id": made["id"]},
    )
    assert answer.json()["changed"] is False


async def test_openapi_schema_lists_the_api(http: httpx.AsyncClient) -> None:
    """The schema documents every route, and the session header on /session."""
    schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/sessions",
        "/sessions/{session_id}",
        "/sessions/{session_id}/state",
        "/sessions/{session_id}/resume",
        "/sessions/{session_id}/rotate",
        "/users/{user_id}/sessions",
        "/session-health",
        "/healthz",
        "/metrics",
    ):
        assert path in paths
    params = paths["/session"]["get"]["parameters"]
    assert any(p["name"] == "Mcp-Session-Id" and p["in"] == "header" for p in params)
    assert schema["components"]["schemas"]["CreateSession"]["additionalProperties"] is False


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", '"30"', "true", "0"])
@pytest.mark.parametrize("field", ["idle_timeout_seconds", "absolute_lifetime_seconds"])
async def test_a_bad_ttl_is_a_422_and_creates_nothing(
    http: httpx.AsyncClient, store: SessionStore, field: str, raw: str
) -> None:
    """Non-finite numbers, strings and booleans as TTLs are refused with 422 (never a
    500), and nothing is written."""
    answer = await http.post(
        "/sessions",
        content='{"user_id": "ttl", "' + field + '": ' + raw + "}",
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert (await store.counts()).active == 0


async def test_a_whole_number_ttl_is_taken(http: httpx.AsyncClient) -> None:
    """A TTL sent as a JSON integer is a number like any other."""
    made = await create(http, idle_timeout_seconds=30, absolute_lifetime_seconds=3600)
    assert made["idle_timeout_seconds"] == 30
