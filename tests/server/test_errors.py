"""Every refusal of the reference server has one documented shape, and the OpenAPI
document says so: schema errors, bearer checks, bodies that are not UTF-8, wrong
methods (with the whole ``Allow``), session ids of this store's shards; behind a real
uvicorn an unexpected error keeps the keep-alive connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sessionstore import Settings
from sessionstore._ids import session_id_pattern
from sessionstore.server import create_app
from tests.serving import Uvicorn, serving

pytestmark = pytest.mark.standalone

ADMIN = "admin-t0ken"
#: Creating and writing sessions over the API takes a service (or admin) token.
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def settings_for(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url, key_prefix=key_prefix, shards=4, admin_token=SecretStr(ADMIN)
    )


@pytest.fixture
async def http(redis_url: str, key_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings_for(redis_url, key_prefix))) as (client, _):
        yield client


def is_problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == code and isinstance(body["detail"], str) and body["detail"]
    return body


async def test_schema_errors_are_problems_without_the_values_sent(
    http: httpx.AsyncClient,
) -> None:
    """A body the schema refuses is 422 invalid_request naming the fields and reasons,
    never the values (FastAPI's ``{"detail": [...]}`` echoes them)."""
    answer = await http.post(
        "/sessions", json={"user_id": "bad id!", "idle_timeout_seconds": -1}, headers=AS_ADMIN
    )
    body = is_problem(answer, 422, "invalid_request")
    assert {tuple(e["loc"]) for e in body["errors"]} == {
        ("body", "user_id"),
        ("body", "idle_timeout_seconds"),
    }
    assert "bad id!" not in answer.text and all("input" not in e for e in body["errors"])


async def test_http_refusals_are_problems(http: httpx.AsyncClient) -> None:
    """Bearer checks, a bad If-Match, a body that is not UTF-8 and unknown paths answer the
    problem shape with a code named after their status."""
    wrong = await http.post(
        "/breakers/x/reset", json={"actor": "ops"}, headers={"Authorization": "Bearer nope"}
    )
    assert is_problem(wrong, 401, "unauthorized") and wrong.headers["WWW-Authenticate"]
    session = (await http.post("/sessions", json={}, headers=AS_ADMIN)).json()
    bad_tag = await http.patch(
        f"/sessions/{session['id']}/state", json={}, headers={"If-Match": "W/1", **AS_ADMIN}
    )
    is_problem(bad_tag, 400, "bad_request")
    latin = await http.post(
        "/sessions",
        content=b'{"user_id": "\xe9"}',
        headers={"Content-Type": "application/json", **AS_ADMIN},
    )
    is_problem(latin, 400, "bad_request")
    is_problem(await http.get("/nowhere"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/sessions/0.AAAAAAAAAAAAAAAAAAAAAAAA", "DELETE, GET"),
        ("PUT", "/sessions/0.AAAAAAAAAAAAAAAAAAAAAAAA/upstreams/mail/health", "GET"),
        ("OPTIONS", "/sessions/0.AAAAAAAAAAAAAAAAAAAAAAAA/upstreams/mail", "DELETE, GET, PUT"),
        ("OPTIONS", "/breakers/imap:x:993/reset", "POST"),
        ("GET", "/breakers/imap:x:993/force-open", "POST"),
        ("DELETE", "/breakers/imap:x:993", "GET"),
    ],
)
async def test_wrong_methods_list_every_method_of_the_path(
    http: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    """A method the path does not serve is 405 with all of the path's methods in Allow,
    not those of the first route that matched it."""
    answer = await http.request(method, path)
    is_problem(answer, 405, "method_not_allowed")
    assert answer.headers["Allow"] == allow


async def test_a_wrong_method_is_answered_before_the_session_header_is_read(
    http: httpx.AsyncClient,
) -> None:
    """TRACE /session with a malformed session header is 405, not the middleware's 400:
    no request lease is taken for a request no route serves."""
    answer = await http.request("TRACE", "/session", headers={"Mcp-Session-Id": "junk"})
    is_problem(answer, 405, "method_not_allowed")
    assert answer.headers["Allow"] == "GET"


async def test_a_breaker_read_with_no_events(http: httpx.AsyncClient) -> None:
    """``events=0`` reads the breaker without its history (it answered 500: XREVRANGE
    refuses COUNT 0)."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    opened = await http.post(
        "/breakers/imap:x:993/force-open", json={"actor": "ops", "reason": "test"}, headers=headers
    )
    assert opened.status_code == 200, opened.text
    answer = await http.get("/breakers/imap:x:993", params={"events": 0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == [] and answer.json()["audit"] == []
    assert answer.json()["breaker"]["state"] == "forced_open"


def test_the_document_shows_one_problem_shape_and_this_stores_ids() -> None:
    """Every 4xx/5xx in the OpenAPI document is a `ProblemOut` (no HTTPValidationError);
    routes with a body document 400, 408, 413 and 422; session ids carry the pattern of
    this store's shards; optional headers are strings, never null."""
    document = create_app(settings_for("redis://127.0.0.1:1/0", "x")).openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ProblemOut"}, (path, status)
            if "requestBody" in operation:
                assert {"400", "408", "413", "422"} <= set(operation["responses"]), path
            for parameter in operation.get("parameters", ()):
                assert "anyOf" not in parameter["schema"], (path, parameter["name"])
                if parameter["name"] == "session_id":
                    assert parameter["schema"]["pattern"] == session_id_pattern(4), path
    patch = document["paths"]["/sessions/{session_id}/state"]["patch"]
    (if_match,) = [p for p in patch["parameters"] if p["name"] == "if-match"]
    assert if_match["schema"]["type"] == "string" and if_match["schema"]["pattern"]


async def _boom() -> None:
    raise RuntimeError("a bug")


@pytest.fixture
async def served_port(redis_url: str, key_prefix: str) -> AsyncIterator[int]:
    """A replica with one route that fails, served by uvicorn on 127.0.0.1."""
    app = create_app(settings_for(redis_url, key_prefix))
    app.add_api_route("/boom", _boom)
    server = Uvicorn(app, log_level="critical", ws="none")
    await server.start()
    yield server.port
    await server.stop()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, dict[str, str], bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:]) if k}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def test_a_500_keeps_the_connection_open(served_port: int) -> None:
    """Behind a real uvicorn, a route that raises gets 500 internal_error (no traceback in
    the body), without
    ``Connection: close``; the same connection then serves /healthz."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served_port)
    try:
        status, headers, body = await _exchange(reader, writer, "/boom")
        assert status == 500
        assert json.loads(body) == {
            "error": "internal_error",
            "detail": "the server failed to answer",
        }
        assert headers.get("connection") != "close"
        status, _, _ = await _exchange(reader, writer, "/healthz")
        assert status == 200
    finally:
        writer.close()
        await writer.wait_closed()
