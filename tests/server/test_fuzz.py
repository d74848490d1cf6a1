"""API fuzzing from the server's own OpenAPI schema (schemathesis): no input gives a 5xx.

schemathesis drives the ASGI app in-process (in its own event-loop thread,
lifespan included) against the test session's real Redis. Every operation
gets valid and invalid generated requests.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi

from sessionstore import RedisSettings, SessionStore, Settings, create_client
from sessionstore.server import create_app
from sessionstore.upstream import SecretBox

pytestmark = pytest.mark.slow


PREFIX = "fuzz" + secrets.token_hex(3)
TOKEN = "fuzz-token"
ADMIN_TOKEN = "fuzz-admin-token"
SECRET_KEY = SecretBox.generate_key()
LOOPBACK = {"host": "127.0.0.1", "port": 1, "tls": False, "username": "fuzz", "secret": "fuzz-pw"}


def _settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=PREFIX,
        shards=4,
        health_token=SecretStr(TOKEN),
        admin_token=SecretStr(ADMIN_TOKEN),
        max_body_bytes=64 * 1024,
        # Upstreams: secrets can be stored; generated hosts other than loopback are refused
        # (no DNS lookups of made-up names), and a silent port costs half a second at most.
        secret_key=SecretStr(SECRET_KEY),
        upstream_allowed_hosts="127.0.0.1,localhost",
        upstream_connect_timeout=timedelta(seconds=0.5),
        upstream_call_timeout=timedelta(seconds=0.5),
        # Fuzzing tests the API's answers to input, not a hung Redis: on a loaded test
        # machine a command may wait longer than the default 0.75 s budget for a core,
        # and the outage latch it trips would answer the next requests with 503.
        request_redis_timeout=timedelta(seconds=10),
    )


def _operations() -> list[tuple[str, str]]:
    """(path, method) of every operation; the schema needs no Redis to be built."""
    raw = create_app(_settings("redis://127.0.0.1:1/0")).openapi()
    schema = schemathesis.openapi.from_dict(raw)
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok)
        operation = result.ok()
        found.append((operation.path, operation.method.upper()))
    return found


@pytest.fixture(scope="module")
def api_schema(redis_url: str) -> Iterator[schemathesis.BaseSchema]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_settings(redis_url)))
    yield schema
    # The app's lifespan runs until shut down: close its Redis client now.
    schemathesis_asgi.shutdown_lifespans()


def _live_sessions(redis_url: str, count: int) -> list[str]:
    """Fresh sessions to aim at: random ids alone would only ever reach the 400 path."""

    async def make() -> list[str]:
        client = create_client(RedisSettings.from_dsn(redis_url))
        try:
            store = SessionStore(client, _settings(redis_url).session)
            return [(await store.create(user_id="fuzz", state={"n": 1})).id for _ in range(count)]
        finally:
            await client.aclose()

    return asyncio.run(make())


def _cases(operation: Any, overrides: dict[str, Any]) -> st.SearchStrategy[schemathesis.Case]:
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, **overrides),
        operation.as_strategy(GenerationMode.NEGATIVE, **overrides),
    )


def _upstream_cases(
    operation: Any, path: str, ids: list[str]
) -> list[st.SearchStrategy[schemathesis.Case]]:
    """As the session's own client (header = path id) and as an operator (admin token), at
    a fixed upstream name too, so reads and removals meet registered records."""
    aimed = []
    for session_id in ids:
        for auth in ({"Mcp-Session-Id": session_id}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
            params = {"session_id": session_id}
            aimed.append(_cases(operation, {"headers": auth, "path_parameters": params}))
            if "{name}" in path:
                named: dict[str, Any] = {
                    "headers": auth,
                    "path_parameters": {**params, "name": "mail"},
                }
                aimed.append(_cases(operation, named))
                if operation.method.upper() == "PUT":
                    # A storable registration, so verify=true really connects (port 1: refused).
                    aimed.append(_cases(operation, {**named, "body": LOOPBACK}))
                    verified = {**named, "body": LOOPBACK, "query": {"verify": "true"}}
                    aimed.append(_cases(operation, verified))
    return aimed


def _strategy(operation: Any, path: str, ids: list[str]) -> st.SearchStrategy[schemathesis.Case]:
    """Free generation, plus generation aimed at live, unknown and ended sessions."""
    unknown = "0." + "A" * 24
    aimed: list[st.SearchStrategy[schemathesis.Case]] = [_cases(operation, {})]
    for session_id in [*ids, unknown]:
        if "{session_id}" in path:
            aimed.append(_cases(operation, {"path_parameters": {"session_id": session_id}}))
        if path.startswith("/session/") or path == "/session":
            overrides: dict[str, Any] = {"headers": {"Mcp-Session-Id": session_id}}
            if path == "/session/wait":
                # A long poll on a live session waits its timeout out (25 s by default).
                overrides["query"] = {"timeout": 0.05}
            aimed.append(_cases(operation, overrides))
    if path == "/session-health":
        aimed.append(_cases(operation, {"headers": {"Authorization": f"Bearer {TOKEN}"}}))
    if "/upstreams" in path:
        aimed += _upstream_cases(operation, path, ids)
    if path.startswith("/breakers/"):
        # A valid admin token reaches the body checks and Redis, not only the 401.
        for auth in ({}, {"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"}}):
            aimed.append(_cases(operation, {**auth, "path_parameters": {"name": "imap:fuzz:993"}}))
            aimed.append(_cases(operation, auth))
    return st.one_of(aimed)


@pytest.mark.parametrize(("path", "method"), _operations())
def test_no_input_gives_a_server_error(
    api_schema: schemathesis.BaseSchema, redis_url: str, path: str, method: str
) -> None:
    """Valid and invalid generated requests to the operation, aimed at live, unknown,
    malformed and (after earlier cases end them) ended sessions, never get a 5xx (this
    Redis is healthy, so not even the documented 503). The one exception is the upstream
    that is not there: ``verify=true`` against the refused loopback port answers the
    documented 503 ``upstream_unavailable``, then ``breaker_open`` once the refusals trip
    its breaker (counted apart; any other 5xx fails)."""
    operation = api_schema[path][method]
    cases = _strategy(operation, path, _live_sessions(redis_url, 3))
    statuses: set[int] = set()

    @hypothesis.settings(
        max_examples=80,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def run(case: schemathesis.Case) -> None:
        response = case.call()
        if _upstream_not_there(response):
            return  # documented, and not a bad-input answer: see the docstring
        statuses.add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    run()
    assert statuses and max(statuses) < 500


def _upstream_not_there(response: Any) -> bool:
    """The documented answers to ``verify=true`` against the refused loopback port: refused,
    or, once enough refusals tripped its breaker, refused by the breaker."""
    if response.status_code != 503:
        return False
    problem = response.json()
    refused = problem.get("error") == "upstream_unavailable" and problem.get("reason") == "refused"
    breakers = {"imap+plain:127.0.0.1:1", "imap:127.0.0.1:1"}
    tripped = problem.get("error") == "breaker_open" and problem.get("breaker") in breakers
    return bool(refused or tripped)
