"""Type-checked use of the ASGI and server API (run by mypy, never by pytest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware

from sessionstore import ServerSettings, Session, SessionStore, Settings
from sessionstore.asgi import (
    DrainResult,
    InFlightRequests,
    Problem,
    SessionCookie,
    SessionMiddleware,
    etag,
    problem_for,
)
from sessionstore.asgi.dependencies import Breakers, CurrentSession, MaybeSession, Store
from sessionstore.breaker import BreakerRegistry
from sessionstore.exceptions import SessionNotFound
from sessionstore.server import CORE_CHECKS, HealthSection, ServerState, create_app


def build_apps(store: SessionStore) -> tuple[Starlette, FastAPI]:
    inflight = InFlightRequests()
    cookie = SessionCookie(secret=SecretStr("k"), name="sid", secure=False)
    starlette_app = Starlette(
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                cookie=cookie,
                renew_expired=True,
                gone_status=404,
                exclude_paths=("/healthz",),
                inflight=inflight,
                drain_timeout=5.0,
            )
        ]
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        settings = Settings()
        registry = BreakerRegistry(
            store.redis, settings.breaker, key_prefix=settings.session.key_prefix
        )
        async with registry:
            yield {"session_store": store, "breakers": registry}

    fastapi_app = FastAPI(lifespan=lifespan)
    fastapi_app.add_middleware(SessionMiddleware, header="X-Session")

    @fastapi_app.get("/me")
    async def me(session: CurrentSession, maybe: MaybeSession, found: Store) -> dict[str, Any]:
        assert maybe is None or maybe.id == session.id
        return {"id": session.id, "store": found.keys.prefix}

    @fastapi_app.get("/inbox")
    async def inbox(session: CurrentSession, breakers: Breakers) -> dict[str, int]:
        imap = await breakers.get("imap:imap.example.com:993")

        async def count(user: str) -> int:
            return len(user)

        return {"count": await imap.call(count, session.user_id or "")}

    return starlette_app, fastapi_app


async def drain(inflight: InFlightRequests) -> int:
    result: DrainResult = await inflight.drain(1.0)
    return result.finished + result.released + len(inflight)


def answers(session: Session) -> str:
    problem: Problem = problem_for(SessionNotFound(session.id))
    return f"{problem.status} {etag(session.version)} {problem.response().status_code}"


async def health(state: ServerState) -> list[HealthSection]:
    return [await check(state) for check in CORE_CHECKS]


def server() -> FastAPI:
    server = ServerSettings(service_tokens=SecretStr("a,b"))
    return create_app(Settings(redis_url="redis://127.0.0.1:6379/0", server=server))
