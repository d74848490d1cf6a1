"""An app of your own that shows its users their sessions safely (docs/security.md).

A FastAPI app with `SessionMiddleware`: ``POST /login`` creates the user's
session in process (after the app has checked who the user is: here, a
stand-in that takes any name), ``GET /me/sessions`` lists the sessions of the
*caller's own* user without their ids, and ``DELETE /me/sessions/{handle}``
ends one of them. The user always comes from the session the middleware
leased, never from the path or the body, so one user cannot name another.

Run it with ``SESSIONSTORE_REDIS_URL=redis://... uvicorn --factory
examples.my_sessions:create_app``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from sessionstore import Session, SessionStore, Settings, create_client
from sessionstore.asgi import SessionMiddleware
from sessionstore.asgi.dependencies import CurrentSession, Store


class Login(BaseModel):
    """Who logs in (a real app checks a password or an identity provider's token)."""

    user: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    client: str = Field(default="browser", max_length=64)


def handle(session_id: str) -> str:
    """What a user sees instead of a session id: a digest that cannot be turned back."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


def _user_of(session: Session) -> str:
    if session.user_id is None:
        raise HTTPException(403, "this session belongs to no user")
    return session.user_id


def create_app(store: SessionStore | None = None) -> FastAPI:
    """The example app; on `store` when given, else on ``SESSIONSTORE_REDIS_URL``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if store is not None:
            yield {"session_store": store}
            return
        settings = Settings()
        client = create_client(settings.store_redis(settings.redis_url or ""))
        try:
            yield {"session_store": SessionStore(client, settings.session)}
        finally:
            await client.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(SessionMiddleware)

    @app.post("/login", status_code=201)
    async def login(body: Login, request: Request, store: Store) -> dict[str, str]:
        """Create the user's session; the middleware sends its id back in the header."""
        session = await store.create(user_id=body.user, metadata={"client": body.client})
        request.state.session = session
        return {"handle": handle(session.id)}

    @app.get("/me/sessions")
    async def my_sessions(session: CurrentSession, store: Store) -> list[dict[str, Any]]:
        """The caller's own user's sessions: no ids, only what tells them apart."""
        mine = await store.list_for_user(_user_of(session))
        return [
            {
                "handle": handle(s.id),
                "this_one": s.id == session.id,
                "created_at": s.created_at.isoformat(),
                "client": s.metadata.get("client"),
            }
            for s in mine
        ]

    @app.delete("/me/sessions/{session_handle}", status_code=204)
    async def end_my_session(session_handle: str, session: CurrentSession, store: Store) -> None:
        """End one of the caller's own user's sessions, named by its handle."""
        for s in await store.list_for_user(_user_of(session)):
            if handle(s.id) == session_handle:
                await store.delete(s.id)
                return
        raise HTTPException(404, "no session of yours has this handle")

    return app
