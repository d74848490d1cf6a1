"""The app factory and its lifespan.

`create_app` takes the `Settings` (built once, at the edge: the CLI, or
``Settings()`` when uvicorn calls the factory) and wires the middleware and
routers. The lifespan creates the Redis client and the store when the server
starts, yields them as the lifespan state, and closes the client when it
stops. Nothing is global: two apps in one process share nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .. import __version__
from .._redis import create_client
from .._settings import Settings
from .._store import SessionStore
from ..asgi import InFlightRequests, SessionCookie, SessionMiddleware
from ..exceptions import BackendUnavailable, InvalidInput
from ._errors import install_error_handlers
from ._health import CORE_CHECKS
from ._metrics import RequestMetrics, ServerMetrics
from ._state import STATE_KEY, ServerState
from .routes import current, observability, sessions

logger = logging.getLogger("sessionstore.server")

#: Served without looking at the session: they must answer while Redis is down.
UNSESSIONED_PATHS = ("/healthz", "/session-health", "/metrics", "/openapi.json", "/docs")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The reference server: session API, health, metrics.

    Args:
        settings: everything configurable; read from the environment when None
            (``uvicorn --factory sessionstore.server:create_app``).

    .. versionadded:: 0.1
    """
    settings = settings or Settings()
    inflight = InFlightRequests()
    metrics = ServerMetrics(in_flight=inflight.__len__)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if settings.redis_url is None:
            raise InvalidInput("set SESSIONSTORE_REDIS_URL: the server needs a Redis")
        redis_settings = settings.store_redis(settings.redis_url)
        client = create_client(redis_settings)
        try:
            store = SessionStore(client, settings.session_settings())
            state = ServerState(
                settings=settings,
                redis=client,
                store=store,
                metrics=metrics,
                inflight=inflight,
                health_checks=list(CORE_CHECKS),
            )
            logger.info("serving sessions from %s", redis_settings.to_dsn())
            try:
                await store.load_scripts()
            except BackendUnavailable:
                # Not fatal: requests get 503 until Redis is back, and scripts
                # missing then are loaded on first use (NOSCRIPT, then EVAL).
                logger.warning("Redis is unreachable at start-up; serving 503s until it is back")
            yield {STATE_KEY: state, "session_store": store}
        finally:
            await client.aclose()

    app = FastAPI(
        title="sessionstore",
        version=__version__,
        summary="Redis-backed distributed sessions: the reference server.",
        lifespan=lifespan,
        # Starlette's limiter: a declared Content-Length over the limit is refused
        # before reading, a streamed body the moment it passes the limit (413).
        max_body_size=settings.max_body_bytes,
    )
    install_error_handlers(app)
    app.include_router(sessions.router)
    app.include_router(current.router(settings.session_header))
    app.include_router(observability.router)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(
        SessionMiddleware,
        header=settings.session_header,
        cookie=_cookie(settings),
        renew_expired=settings.renew_expired_sessions,
        exclude_paths=UNSESSIONED_PATHS,
        inflight=inflight,
        drain_timeout=settings.drain_timeout.total_seconds(),
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def _cookie(settings: Settings) -> SessionCookie | None:
    if settings.cookie_secret is None:
        return None
    return SessionCookie(secret=settings.cookie_secret, name=settings.session_cookie)
