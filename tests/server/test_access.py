"""The access table of docs/security.md, against a real `sessionstore serve`.

The table is read from the doc. Every route the app serves must have a row
(a new route without one fails here), every row must be a route, and every
caller kind (none, own session, other session, service, admin, health) sends
one request to every route, on a target made fresh for it, and gets exactly
the status the row gives.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sessionstore import Settings
from sessionstore.asgi import SessionCookie
from sessionstore.cli.serve import served_app
from sessionstore.server import create_app
from sessionstore.upstream import SecretBox
from tests.fleet.served import ServedFleet

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HEADER = "Mcp-Session-Id"
TOKENS = {
    "service": "access-service-t0ken",
    "admin": "access-admin-t0ken",
    "health": "access-health-t0ken",
}
#: A second token per role: both are accepted (rotation without downtime).
OLD_TOKENS = {role: token + "-old" for role, token in TOKENS.items()}
COOKIE_SECRET = "access-cookie-secret-" + secrets.token_hex(8)
CALLERS = ("none", "own", "other", "service", "admin", "health")
HTTP_METHODS = {"get", "put", "post", "patch", "delete"}
#: A registration the replica accepts without connecting (loopback, never dialled).
UPSTREAM = {"host": "127.0.0.1", "port": 9, "tls": False, "username": "u", "secret": "pw"}
WHY = {"actor": "access-test", "reason": "checking who may steer"}
#: What each route is sent, by route (an allowed caller must succeed with it).
BODIES: dict[str, Any] = {
    "POST /sessions": {"user_id": "access-user"},
    "PATCH /sessions/{session_id}/state": {"values": {"touched_by": "test"}},
    "PUT /sessions/{session_id}/upstreams/{name}": UPSTREAM,
    "POST /breakers/{name}/force-open": WHY,
    "POST /breakers/{name}/force-closed": WHY,
    "POST /breakers/{name}/reset": WHY,
    "POST /demo/upstreams/{upstream}/call": {"outcome": "success"},
}
QUERIES = {"GET /session/wait": "?after_version=0&timeout=0.1"}


def settings_env() -> dict[str, str]:
    return {
        "SESSIONSTORE_KEY_PREFIX": "access" + secrets.token_hex(3),
        "SESSIONSTORE_SHARDS": "4",
        "SESSIONSTORE_SERVICE_TOKENS": f"{OLD_TOKENS['service']},{TOKENS['service']}",
        "SESSIONSTORE_ADMIN_TOKEN": f"{TOKENS['admin']}, {OLD_TOKENS['admin']}",
        "SESSIONSTORE_HEALTH_TOKEN": f"{TOKENS['health']},{OLD_TOKENS['health']}",
        "SESSIONSTORE_COOKIE_SECRET": COOKIE_SECRET,
        "SESSIONSTORE_DEMO_ROUTES": "true",
        "SESSIONSTORE_SECRET_KEY": SecretBox.generate_key(),
        "SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS": "127.0.0.1",
        "SESSIONSTORE_QUEUE_REDIS_URL": "",
    }


def documented_table() -> dict[str, dict[str, int]]:
    """``"METHOD /path"`` -> caller -> status, from the table in docs/security.md."""
    text = (ROOT / "docs" / "security.md").read_text()
    header = "| route | " + " | ".join(CALLERS) + " | how it is checked |"
    assert header in text, "the access table's header changed"
    rows: dict[str, dict[str, int]] = {}
    for line in text[text.index(header) :].splitlines()[2:]:
        if not line.startswith("| `"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        route = cells[0].strip("`")
        assert route not in rows, f"{route} has two rows"
        rows[route] = dict(zip(CALLERS, (int(cell) for cell in cells[1:7]), strict=True))
    return rows


def served_routes() -> set[str]:
    """Every ``"METHOD /path"`` the replica serves: the OpenAPI operations plus the app's
    own routes (the docs pages), of the app `sessionstore serve` builds from the fleet's
    settings (the demo route included)."""
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        service_tokens=SecretStr("x"),
        demo_routes=True,
    )
    app = served_app(settings)
    routes = {
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    for route in app.routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path is not None and methods:
            routes |= {f"{m} {path}" for m in methods if m != "HEAD"}
    return routes


@pytest.fixture(scope="module")
def fleet() -> Iterator[ServedFleet]:
    served = ServedFleet(1, settings_env()).start()
    yield served
    served.stop()


@pytest.fixture
async def http(fleet: ServedFleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.replicas[0].url, timeout=30.0) as client:
        yield client


def bearer(role: str, *, old: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {(OLD_TOKENS if old else TOKENS)[role]}"}


@dataclass
class Target:
    """What one request is aimed at, made fresh for it."""

    session_id: str
    other_id: str
    breaker: str
    upstream: str


async def new_session(http: httpx.AsyncClient, user: str = "access-user") -> str:
    made = await http.post("/sessions", json={"user_id": user}, headers=bearer("service"))
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def new_target(http: httpx.AsyncClient) -> Target:
    session_id, other_id = await new_session(http), await new_session(http, "someone-else")
    registered = await http.put(
        f"/sessions/{session_id}/upstreams/mail", json=UPSTREAM, headers=bearer("service")
    )
    assert registered.status_code == 200, registered.text
    # One demo breaker for every target (a replica follows 16 at most); a fresh real
    # name for each control request, so no request sees another's forcing.
    called = await http.post("/demo/upstreams/access/call", json={"outcome": "success"})
    assert called.status_code == 200, called.text
    return Target(session_id, other_id, f"imap:access{secrets.token_hex(3)}.example:993", "access")


def _name(template: str, target: Target) -> str:
    if "/upstreams/" in template:
        return "mail"
    return target.breaker if template.startswith("/breakers/{name}/") else "demo:access"


def request_for(route: str, caller: str, target: Target) -> tuple[str, str, dict[str, Any]]:
    method, template = route.split(" ", 1)
    path = (
        template.replace("{session_id}", target.session_id)
        .replace("{user_id}", "access-user")
        .replace("{name}", _name(template, target))
        .replace("{upstream}", target.upstream)
    )
    headers: dict[str, str] = {}
    if caller == "own":
        headers[HEADER] = target.session_id
    elif caller == "other":
        headers[HEADER] = target.other_id
    elif caller in TOKENS:
        headers |= bearer(caller)
    options: dict[str, Any] = {"headers": headers}
    if route in BODIES:
        options["json"] = BODIES[route]
    return method, path + QUERIES.get(route, ""), options


def test_every_served_route_has_a_row_and_every_row_is_served() -> None:
    """The doc's table and the app's routes are the same set."""
    documented, served = set(documented_table()), served_routes()
    assert served - documented == set(), "routes without a row in docs/security.md"
    assert documented - served == set(), "rows in docs/security.md for no route"


async def test_every_caller_gets_the_documented_answer_on_every_route(
    http: httpx.AsyncClient,
) -> None:
    """Each caller kind, each route, a fresh target: exactly the documented status."""
    wrong: list[str] = []
    for route, expected in sorted(documented_table().items()):
        for caller in CALLERS:
            target = await new_target(http)
            method, path, options = request_for(route, caller, target)
            answer = await http.request(method, path, **options)
            if answer.status_code != expected[caller]:
                wrong.append(
                    f"{route} as {caller}: {answer.status_code}, documented "
                    f"{expected[caller]} ({answer.text[:120]})"
                )
    assert wrong == []


#: The registration's MCP shapes, and what each caller gets for them: an MCP server by
#: URL is registered like an IMAP account; one by command needs the admin token, and
#: then a command ``SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS`` lists (unset here: 422).
MCP_BODIES: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "url": (
        {"kind": "mcp", "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp",
         "bearer_token": "tok"},
        {"none": 401, "own": 200, "other": 403, "service": 200, "admin": 200, "health": 401},
    ),
    "command": (
        {"kind": "mcp", "transport": "stdio", "command": sys.executable, "args": ["-V"]},
        {"none": 401, "own": 403, "other": 403, "service": 403, "admin": 422, "health": 401},
    ),
}  # fmt: skip


@pytest.mark.parametrize("shape", sorted(MCP_BODIES))
async def test_who_may_register_an_mcp_upstream(http: httpx.AsyncClient, shape: str) -> None:
    """The registration route with an MCP body: each caller gets the status docs/security.md
    gives (a command runs a program on the fleet: admin token and an allowed command)."""
    body, expected = MCP_BODIES[shape]
    route = "PUT /sessions/{session_id}/upstreams/{name}"
    got = {}
    for caller in CALLERS:
        method, path, options = request_for(route, caller, await new_target(http))
        got[caller] = (await http.request(method, path, **(options | {"json": body}))).status_code
    assert got == expected


async def test_old_and_new_tokens_both_work_and_a_near_miss_does_not(
    http: httpx.AsyncClient,
) -> None:
    """Every role takes each of its configured tokens (rotation); a token one character
    off, another role's token or a token in the wrong scheme gets 401."""
    for old in (False, True):
        made = await http.post("/sessions", json={}, headers=bearer("service", old=old))
        health = await http.get("/session-health", headers=bearer("health", old=old))
        assert made.status_code == 201 and health.status_code in (200, 503)
    near = {"Authorization": f"Bearer {TOKENS['service']}x"}
    basic = {"Authorization": f"Basic {TOKENS['service']}"}
    for headers in (near, basic, bearer("health")):
        refused = await http.post("/sessions", json={}, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)


async def test_the_signed_cookie_is_its_sessions_own_client(http: httpx.AsyncClient) -> None:
    """A validly signed cookie acts as its own session; one signed with another secret is
    ignored, leaving an anonymous caller (401); a cookie of another session gets 403."""
    session_id, other_id = await new_session(http), await new_session(http)
    good = SessionCookie(secret=SecretStr(COOKIE_SECRET))
    forged = SessionCookie(secret=SecretStr("not-the-secret"))

    async def read(cookie: SessionCookie, cookie_id: str) -> int:
        value = cookie.set_header(cookie_id).split(";", 1)[0]
        answer = await http.get(f"/sessions/{session_id}", headers={"Cookie": value})
        return answer.status_code

    assert await read(good, session_id) == 200
    assert await read(forged, session_id) == 401
    assert await read(good, other_id) == 403


def test_the_server_refuses_to_start_without_a_management_credential() -> None:
    """No service or admin token: `create_app` refuses, naming the settings and the way out;
    with the insecure switch it starts."""
    from sessionstore.exceptions import InvalidInput

    bare = Settings(redis_url="redis://127.0.0.1:1/0", health_token=SecretStr("h"))
    with pytest.raises(InvalidInput, match="SESSIONSTORE_SERVICE_TOKENS") as refused:
        create_app(bare)
    assert "--insecure-open-management" in str(refused.value)
    server = bare.server.model_copy(update={"insecure_open_management": True})
    assert create_app(bare.model_copy(update={"server": server}))


def test_serve_exits_2_without_a_management_credential() -> None:
    """`sessionstore serve` with a health token only: exit 2 and a message naming the
    settings and the switch, before it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    env |= {"SESSIONSTORE_REDIS_URL": "redis://127.0.0.1:1/0", "SESSIONSTORE_HEALTH_TOKEN": "h"}
    done = subprocess.run(
        [sys.executable, "-m", "sessionstore", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "SESSIONSTORE_SERVICE_TOKENS" in done.stderr
    assert "--insecure-open-management" in done.stderr


def test_tokens_are_kept_only_as_digests() -> None:
    """The settings the server keeps hold no token; the digests' repr shows counts only."""
    from sessionstore.server._auth import AccessTokens, without_tokens

    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        service_tokens=SecretStr("svc-one,svc-two"),
        admin_token=SecretStr("adm"),
    )
    kept = without_tokens(settings)
    access = AccessTokens.from_settings(settings)
    server = kept.server
    assert (server.service_tokens, server.admin_token, server.health_token) == (None, None, None)
    assert re.fullmatch(r"AccessTokens\(health=0, service=2, admin=1, .*\)", repr(access))
    assert access.service.matches("svc-two") and not access.service.matches("svc-tw")
