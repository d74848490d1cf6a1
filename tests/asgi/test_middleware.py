"""SessionMiddleware on a plain Starlette app against a real Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionstore import (
    RedisClient,
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
)
from sessionstore.asgi import (
    RENEWED_HEADER,
    BodyReadLimits,
    InFlightRequests,
    SessionCookie,
    SessionMiddleware,
)
from sessionstore.testing import free_port
from tests.polling import eventually
from tests.serving import serving

#: These tests serve an app on the standalone Redis (`redis_url`); the store matches it.
pytestmark = pytest.mark.standalone

HEADER = "Mcp-Session-Id"


@dataclass
class Gate:
    """Lets a test hold a request inside the app until it says go."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def make_app(store: SessionStore, gate: Gate | None = None, **options: Any) -> Starlette:
    """A small app: /whoami echoes the session, /hold waits on the gate, /new creates one,
    /nothing answers 204."""
    gate = gate or Gate()

    async def whoami(request: Request) -> JSONResponse:
        session = request.state.session
        if session is None:
            return JSONResponse({"id": None})
        live = await store.get(session.id)
        return JSONResponse({"id": session.id, "requests_now": live.active_requests})

    async def hold(request: Request) -> JSONResponse:
        gate.entered.set()
        await gate.release.wait()
        return JSONResponse({"id": request.state.session.id})

    async def new(request: Request) -> JSONResponse:
        made = await store.create()
        request.state.session = made
        return JSONResponse({"id": made.id})

    async def nothing(request: Request) -> Response:
        return Response(status_code=204)

    async def drop(request: Request) -> JSONResponse:
        await store.delete(request.state.session.id)
        request.state.session = None
        return JSONResponse({})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"session_store": store}

    routes = [
        Route("/whoami", whoami, methods=["GET", "POST"]),
        Route("/hold", hold),
        Route("/new", new, methods=["POST"]),
        Route("/drop", drop, methods=["POST"]),
        Route("/nothing", nothing, methods=["DELETE"]),
    ]
    middleware = [Middleware(SessionMiddleware, **options)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def store_with(redis: RedisClient, key_prefix: str, **limits: Any) -> SessionStore:
    return SessionStore(redis, SessionSettings(key_prefix=key_prefix, shards=4, **limits))


async def test_header_session_is_on_the_request_and_holds_a_lease(store: SessionStore) -> None:
    """The app sees the session with its own lease counted; the lease is returned after."""
    made = await store.create()
    async with serving(make_app(store)) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: made.id})
    assert answer.status_code == 200
    assert answer.json() == {"id": made.id, "requests_now": 1}
    assert (await store.get(made.id)).active_requests == 0
    assert HEADER.lower() not in answer.headers, "an unchanged id is not echoed"


async def test_request_without_a_session_passes_through(store: SessionStore) -> None:
    """No header and no cookie: the app runs with state.session = None."""
    async with serving(make_app(store)) as (http, _):
        answer = await http.get("/whoami")
    assert answer.status_code == 200 and answer.json() == {"id": None}


@pytest.mark.parametrize(
    ("session_id", "status", "code"),
    [
        ("0.AAAAAAAAAAAAAAAAAAAAAAAA", 404, "session_not_found"),
        ("not-an-id", 400, "invalid_session_id"),
        ("9999.AAAAAAAAAAAAAAAAAAAAAAAA", 400, "invalid_session_id"),
    ],
)
async def test_unknown_and_malformed_ids_are_refused(
    store: SessionStore, session_id: str, status: int, code: str
) -> None:
    """An id never issued is 404; a malformed one 400; neither reaches the app."""
    async with serving(make_app(store)) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: session_id})
    assert answer.status_code == status
    assert answer.json()["error"] == code


async def test_expired_id_gets_a_clear_410(store: SessionStore) -> None:
    """Without renewal an expired id answers 410 session_expired."""
    made = await store.create()
    await store.expire(made.id)
    async with serving(make_app(store)) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: made.id})
    assert answer.status_code == 410
    assert answer.json()["error"] == "session_expired"
    assert answer.json()["session_id"] == made.id


async def test_gone_status_can_be_404_for_mcp_clients(store: SessionStore) -> None:
    """MCP clients start over on 404; gone_status=404 gives them that, with the same body."""
    made = await store.create()
    await store.delete(made.id)
    async with serving(make_app(store, gone_status=404)) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: made.id})
    assert answer.status_code == 404
    assert answer.json()["error"] == "session_closed"


async def test_expired_id_is_renewed_when_configured(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    """With renew_expired the request runs on a successor whose id comes back in the
    header; the renewal is logged without either id (ids are credentials)."""
    caplog.set_level(logging.INFO, logger="sessionstore")
    made = await store.create(user_id="ann", metadata={"client": "web"})
    await store.expire(made.id)
    async with serving(make_app(store, renew_expired=True)) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: made.id})
        again = await http.get("/whoami", headers={HEADER: made.id})
    new_id = answer.headers[HEADER]
    assert answer.status_code == 200 and new_id != made.id
    assert answer.json()["id"] == new_id
    assert answer.headers[RENEWED_HEADER] == made.id
    successor = await store.get(new_id)
    assert successor.resumed_from == made.id and successor.user_id == "ann"
    # The successor goes to whoever renews the expired id first, once: a second
    # holder of the old id (a thief) gets 410 and no successor.
    assert again.status_code == 410 and again.json()["error"] == "session_expired"
    assert HEADER not in again.headers and new_id not in again.text
    assert "renewed" in caplog.text
    assert made.id not in caplog.text and new_id not in caplog.text


async def test_closed_id_is_not_renewed(store: SessionStore) -> None:
    """Renewal is for expired sessions only: a closed one stays closed."""
    made = await store.create()
    await store.delete(made.id)
    async with serving(make_app(store, renew_expired=True)) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: made.id})
    assert answer.status_code == 410 and answer.json()["error"] == "session_closed"


async def test_session_created_by_the_app_is_sent_back_in_the_header(store: SessionStore) -> None:
    """Like an MCP initialize: the app sets state.session and the client gets its id."""
    async with serving(make_app(store)) as (http, _):
        answer = await http.post("/new")
    assert answer.headers[HEADER] == answer.json()["id"]


async def test_per_session_limit_gives_429_with_retry_after(
    redis: RedisClient, key_prefix: str
) -> None:
    """With one request allowed per session, a second concurrent one is refused (429)."""
    store = store_with(redis, key_prefix, max_requests_per_session=1)
    made = await store.create()
    gate = Gate()
    async with serving(make_app(store, gate)) as (http, _):
        held = asyncio.create_task(http.get("/hold", headers={HEADER: made.id}))
        await gate.entered.wait()
        refused = await http.get("/whoami", headers={HEADER: made.id})
        gate.release.set()
        assert (await held).status_code == 200
        after = await http.get("/whoami", headers={HEADER: made.id})
    assert refused.status_code == 429
    assert refused.json()["error"] == "session_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert after.status_code == 200, "the limit frees up when the first request ends"


async def test_the_lease_is_returned_before_the_response_ends(
    redis: RedisClient, key_prefix: str
) -> None:
    """The server sees the last body message only after the lease is back: a client that
    waits for each response never meets its own lease, even with one request allowed."""
    store = store_with(redis, key_prefix, max_requests_per_session=1)
    made = await store.create()
    seen_at_the_end: list[int] = []

    def spy(app: ASGIApp) -> ASGIApp:
        # Stands where the HTTP server is: outside the middleware.
        async def server_side(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_and_look(message: Message) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    seen_at_the_end.append((await store.get(made.id)).active_requests)
                await send(message)

            await app(scope, receive, send_and_look if scope["type"] == "http" else send)

        return server_side

    async with serving(spy(make_app(store))) as (http, _):
        answers = [(await http.get("/whoami", headers={HEADER: made.id})) for _ in range(3)]
    assert [a.json()["requests_now"] for a in answers] == [1, 1, 1]
    assert seen_at_the_end == [0, 0, 0]


async def test_a_bodiless_response_returns_the_lease_before_its_head(
    redis: RedisClient, key_prefix: str
) -> None:
    """A 204 (or HEAD) is complete for the client once its head arrives, so the lease is
    back before the head goes out: the next request never meets it, even with one allowed."""
    store = store_with(redis, key_prefix, max_requests_per_session=1)
    made = await store.create()
    seen_at_the_head: list[int] = []

    def spy(app: ASGIApp) -> ASGIApp:
        # Stands where the HTTP server is: outside the middleware.
        async def server_side(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_and_look(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen_at_the_head.append((await store.get(made.id)).active_requests)
                await send(message)

            await app(scope, receive, send_and_look if scope["type"] == "http" else send)

        return server_side

    async with serving(spy(make_app(store))) as (http, _):
        answers = [await http.delete("/nothing", headers={HEADER: made.id}) for _ in range(3)]
    assert [a.status_code for a in answers] == [204, 204, 204]
    assert seen_at_the_head == [0, 0, 0]


async def test_a_trickling_body_holds_no_lease(redis: RedisClient, key_prefix: str) -> None:
    """The body is read before the lease is taken: while one request's body is still on
    its way, the session's only request slot serves another request."""
    store = store_with(redis, key_prefix, max_requests_per_session=1)
    made = await store.create()
    started, finish = asyncio.Event(), asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"{"
        started.set()
        await finish.wait()
        yield b"}"

    async with serving(make_app(store)) as (http, _):
        slow = asyncio.create_task(
            http.post("/whoami", content=trickle(), headers={HEADER: made.id})
        )
        await started.wait()
        meanwhile = await http.get("/whoami", headers={HEADER: made.id})
        finish.set()
        assert (await slow).json() == {"id": made.id, "requests_now": 1}
    assert meanwhile.status_code == 200, meanwhile.text


async def test_a_body_that_does_not_arrive_in_time_gets_408(store: SessionStore) -> None:
    """A body still on its way at the deadline: 408 request_timeout, Connection: close."""
    made = await store.create()
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"{"
        await never.wait()

    app = make_app(store, body_limits=BodyReadLimits(timeout=0.2))
    async with serving(app) as (http, _):
        answer = await http.post("/whoami", content=stalled(), headers={HEADER: made.id})
    assert answer.status_code == 408 and answer.json()["error"] == "request_timeout"
    assert answer.headers["Connection"] == "close"
    assert (await store.get(made.id)).active_requests == 0


async def test_global_limit_gives_503_with_retry_after(redis: RedisClient, key_prefix: str) -> None:
    """With one request allowed fleet-wide, another session's request gets 503 capacity."""
    store = store_with(redis, key_prefix, max_requests_global=1)
    first, second = await store.create(), await store.create()
    gate = Gate()
    async with serving(make_app(store, gate)) as (http, _):
        held = asyncio.create_task(http.get("/hold", headers={HEADER: first.id}))
        await gate.entered.wait()
        refused = await http.get("/whoami", headers={HEADER: second.id})
        gate.release.set()
        await held
    assert refused.status_code == 503
    assert refused.json()["error"] == "capacity_exceeded"
    assert "Retry-After" in refused.headers


async def test_redis_down_gives_503_with_retry_after(key_prefix: str) -> None:
    """A store whose Redis refuses connections answers 503 backend_unavailable."""
    dead = create_client(RedisSettings.from_dsn(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        store = store_with(dead, key_prefix)
        async with serving(make_app(store)) as (http, _):
            answer = await http.get("/whoami", headers={HEADER: "0.AAAAAAAAAAAAAAAAAAAAAAAA"})
    finally:
        await dead.aclose()
    assert answer.status_code == 503
    assert answer.json()["error"] == "backend_unavailable"
    assert answer.headers["Retry-After"] == "1"


@pytest.fixture
def cookie() -> SessionCookie:
    return SessionCookie(secret=SecretStr("test-secret"), secure=False)


async def test_cookie_carries_only_a_signed_id(store: SessionStore, cookie: SessionCookie) -> None:
    """A session created by the app is set as a signed cookie, which later requests use."""
    async with serving(make_app(store, cookie=cookie)) as (http, _):
        created = await http.post("/new")
        session_id = created.json()["id"]
        value = http.cookies[cookie.name]
        answer = await http.get("/whoami")
    assert value.startswith(session_id + ".") and value != session_id
    assert "HttpOnly" in created.headers["set-cookie"]
    assert answer.json()["id"] == session_id


async def test_cookie_is_found_among_others_and_malformed_ones(
    store: SessionStore, cookie: SessionCookie
) -> None:
    """Other cookies, split Cookie headers and a malformed neighbour do not hide it."""
    made = await store.create()
    headers = [
        ("cookie", 'junk="unterminated; other=1'),
        ("cookie", f"{cookie.name}={cookie.sign(made.id)}"),
    ]
    async with serving(make_app(store, cookie=cookie)) as (http, _):
        answer = await http.get("/whoami", headers=headers)
    assert answer.json()["id"] == made.id
    assert "set-cookie" not in answer.headers, "an unchanged cookie is not rewritten"


async def test_tampered_cookie_is_ignored_and_cleared(
    store: SessionStore, cookie: SessionCookie
) -> None:
    """A cookie with a wrong signature never reaches the store and is removed."""
    made = await store.create()
    forged = made.id + ".bm90LWEtc2lnbmF0dXJl"
    async with serving(make_app(store, cookie=cookie)) as (http, _):
        answer = await http.get("/whoami", headers={"cookie": f"{cookie.name}={forged}"})
    assert answer.json() == {"id": None}
    assert "Max-Age=0" in answer.headers["set-cookie"]


async def test_cookie_of_a_dropped_session_is_cleared(
    store: SessionStore, cookie: SessionCookie
) -> None:
    """When the app drops the session, the cookie goes; the old id then answers 410."""
    made = await store.create()
    header = {"cookie": f"{cookie.name}={cookie.sign(made.id)}"}
    async with serving(make_app(store, cookie=cookie)) as (http, _):
        dropped = await http.post("/drop", headers=header)
        later = await http.get("/whoami", headers=header)
    assert "Max-Age=0" in dropped.headers["set-cookie"]
    assert later.status_code == 410
    assert "Max-Age=0" in later.headers["set-cookie"]


async def test_shutdown_drains_running_requests_and_refuses_new_ones(store: SessionStore) -> None:
    """On lifespan shutdown a running request finishes first; new session requests get 503."""
    made, other = await store.create(), await store.create()
    gate, inflight = Gate(), InFlightRequests()
    app = make_app(store, gate, drain_timeout=30, inflight=inflight)
    async with serving(app) as (http, lifespan):
        held = asyncio.create_task(http.get("/hold", headers={HEADER: made.id}))
        await gate.entered.wait()
        stopping = asyncio.create_task(lifespan.stop())
        await eventually(lambda: _true(inflight.closing))
        refused = await http.get("/whoami", headers={HEADER: other.id})
        assert not stopping.done(), "shutdown waits for the running request"
        gate.release.set()
        assert (await held).status_code == 200
        assert (await stopping)["type"] == "lifespan.shutdown.complete"
    assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"
    assert (await store.get(made.id)).active_requests == 0


async def test_drain_returns_leases_of_requests_that_outlive_it(store: SessionStore) -> None:
    """A request still running at the drain deadline has its lease returned anyway."""
    made = await store.create()
    gate = Gate()
    async with serving(make_app(store, gate, drain_timeout=0.05)) as (http, lifespan):
        held = asyncio.create_task(http.get("/hold", headers={HEADER: made.id}))
        await gate.entered.wait()
        assert (await store.get(made.id)).active_requests == 1
        await lifespan.stop()
        leases_after_drain = (await store.get(made.id)).active_requests
        gate.release.set()
        await held
    assert leases_after_drain == 0


async def test_app_started_again_serves_again(store: SessionStore) -> None:
    """The same app object started after a shutdown serves session requests again
    (test clients restart apps; found by the API fuzzer)."""
    app = make_app(store)
    made = await store.create()
    async with serving(app):
        pass
    async with serving(app) as (http, _):
        answer = await http.get("/whoami", headers={HEADER: made.id})
    assert answer.status_code == 200


async def _true(value: bool) -> bool:
    return value


def test_store_is_required(redis_url: str) -> None:
    """Without store= and without a lifespan store the middleware says what is missing."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    middleware = SessionMiddleware(app)

    async def call() -> None:
        scope = {"type": "http", "path": "/", "headers": [(b"mcp-session-id", b"0.x")]}
        await middleware(scope, None, None)  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="session_store"):
        asyncio.run(call())


async def test_a_session_request_costs_two_round_trips(
    store: SessionStore, round_trips: Any
) -> None:
    """Lease taken with the session in its reply, lease returned: two writes to Redis
    per request, whatever the app does without the store."""
    await store.load_scripts()
    session = await store.create()
    plain = Starlette(
        routes=[Route("/", lambda request: JSONResponse({"id": request.state.session.id}))],
        middleware=[Middleware(SessionMiddleware, store=store)],
    )
    async with serving(plain) as (http, _):
        await http.get("/", headers={HEADER: session.id})  # warm the connection pool
        round_trips.reset()
        response = await http.get("/", headers={HEADER: session.id})
    assert response.json() == {"id": session.id}
    assert round_trips.total == 2


def counter_app(store: SessionStore, gate: Gate | None = None) -> Starlette:
    """A route that increments a counter in the session through the request's draft."""

    async def count(request: Request) -> JSONResponse:
        draft = request.state.session_draft
        draft["n"] = draft.get("n", 0) + 1
        if gate is not None:
            gate.entered.set()
            await gate.release.wait()
        return JSONResponse({"n": draft["n"]})

    return Starlette(
        routes=[Route("/count", count)], middleware=[Middleware(SessionMiddleware, store=store)]
    )


async def test_a_request_that_changes_the_session_costs_two_round_trips(
    store: SessionStore, round_trips: Any
) -> None:
    """The draft's change rides on the lease's return: the session read with the
    lease, the change written as the lease goes back, nothing else."""
    await store.load_scripts()
    session = await store.create(state={"n": 1})
    async with serving(counter_app(store)) as (http, _):
        await http.get("/count", headers={HEADER: session.id})  # warm the connection pool
        round_trips.reset()
        response = await http.get("/count", headers={HEADER: session.id})
    assert response.status_code == 200 and response.json() == {"n": 3}
    assert round_trips.total == 2
    got = await store.get(session.id)
    assert got.state == {"n": 3} and got.active_requests == 0


async def test_concurrent_changes_give_a_clear_conflict(store: SessionStore) -> None:
    """A request whose session changed meanwhile answers 409 session_conflict instead
    of its handler's response, and writes nothing; the lease is returned."""
    session = await store.create(state={"n": 1})
    gate = Gate()
    async with serving(counter_app(store, gate)) as (http, _):
        held = asyncio.create_task(http.get("/count", headers={HEADER: session.id}))
        await gate.entered.wait()
        await store.set_state(session.id, {"n": 10})
        gate.release.set()
        answer = await held
    assert answer.status_code == 409
    assert answer.json()["error"] == "session_conflict"
    got = await store.get(session.id)
    assert got.state == {"n": 10} and got.active_requests == 0
