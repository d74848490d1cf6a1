"""The app factory and its lifespan.

`create_app` takes the `Settings` (built once, at the edge: the CLI, or
``Settings()`` when uvicorn calls the factory) and wires the middleware and
routers. The lifespan creates the Redis client, the store, the breaker
registry and the upstream pool (with its reconnect-job queue) when the
server starts, yields them as the lifespan state, and closes them in the
reverse order when it stops: the pool (its sockets and tasks) and the
queue's client, the registry (flushing its outcomes), then the client.
Nothing is global: two apps in one process share nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .. import __version__
from .._environment import Settings
from .._redis import create_client
from ..asgi import (
    BodyLimits,
    BodyReadLimits,
    BodyReads,
    InFlightRequests,
    SessionCookie,
    SessionMiddleware,
)
from ..breaker import BreakerRegistry
from ..exceptions import BackendUnavailable, InvalidInput
from ..store import SessionStore
from ._auth import AccessTokens, without_tokens
from ._errors import UnexpectedErrors, install_error_handlers
from ._health import CORE_CHECKS
from ._methods import AllowedMethods
from ._metrics import RequestMetrics, ServerMetrics
from ._openapi import install_openapi
from ._state import STATE_KEY, ServerState
from ._upstreams import open_upstreams
from .routes import breakers as breaker_routes
from .routes import current, observability, sessions, upstreams

logger = logging.getLogger("sessionstore.server")

#: Why the server will not start without a management credential.
NO_MANAGEMENT_CREDENTIAL = (
    "refusing to serve the management routes (creating sessions, listing a user's "
    "sessions, reading or steering any session) without a credential: set "
    "SESSIONSTORE_SERVICE_TOKENS (or SESSIONSTORE_ADMIN_TOKEN), or, on a machine of "
    "your own only, pass --insecure-open-management "
    "(SESSIONSTORE_INSECURE_OPEN_MANAGEMENT=true) to serve them to anyone"
)

#: Served without looking at the session: they must answer while Redis is down.
UNSESSIONED_PATHS = ("/healthz", "/session-health", "/metrics", "/openapi.json", "/docs")


def create_app(
    settings: Settings | None = None, *, environ: Mapping[str, str] | None = None
) -> FastAPI:
    """The reference server: session API, upstreams, breakers, health, metrics.

    Args:
        settings: everything configurable; read from the environment when None
            (``uvicorn --factory sessionstore.server:create_app``).
        environ: where ``env:`` upstream credential references are looked up
            (default ``os.environ``).

    Raises:
        InvalidInput: neither a service nor an admin token is set and management is
            not explicitly open (`NO_MANAGEMENT_CREDENTIAL`).

    .. versionadded:: 0.1
    """
    settings = settings or Settings()
    access = AccessTokens.from_settings(settings)
    if not access.management_credential and not access.open_management:
        raise InvalidInput(NO_MANAGEMENT_CREDENTIAL)
    # The tokens are held as digests only: the settings the server keeps have none.
    settings = without_tokens(settings)
    inflight = InFlightRequests()
    body_reads = BodyReads()
    metrics = ServerMetrics(in_flight=inflight.__len__, bodies_reading=body_reads.__len__)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if settings.redis_url is None:
            raise InvalidInput("set SESSIONSTORE_REDIS_URL: the server needs a Redis")
        redis_settings = settings.store_redis(settings.redis_url)
        client = create_client(redis_settings)
        try:
            store = SessionStore(client, settings.session)
            # No I/O when opening: a Redis that is down at start-up is waited for.
            breakers = BreakerRegistry(
                client, settings.breaker, key_prefix=settings.session.key_prefix
            )
            breakers.on_transition(metrics.breakers.observed)
            async with (
                breakers,  # closed (outcomes flushed) before the client
                open_upstreams(
                    settings, store, breakers, os.environ if environ is None else environ
                ) as upstream_side,  # closed before the breakers it reports to
            ):
                state = ServerState(
                    settings=settings,
                    redis=client,
                    store=store,
                    metrics=metrics,
                    inflight=inflight,
                    breakers=breakers,
                    upstreams=upstream_side,
                    access=access,
                    health_checks=list(CORE_CHECKS),
                )
                logger.info("serving sessions from %s", redis_settings.to_dsn())
                if access.open_management:
                    logger.warning(
                        "INSECURE: the management routes are open to anonymous callers "
                        "(SESSIONSTORE_INSECURE_OPEN_MANAGEMENT)"
                    )
                try:
                    await store.load_scripts()
                except BackendUnavailable:
                    # Not fatal: requests get 503 until Redis is back, and scripts
                    # missing then are loaded on first use (NOSCRIPT, then EVAL).
                    logger.warning(
                        "Redis is unreachable at start-up; serving 503s until it is back"
                    )
                # "breakers": what `sessionstore.asgi.dependencies.Breakers` reads.
                yield {STATE_KEY: state, "session_store": store, "breakers": breakers}
        finally:
            await client.aclose()

    app = FastAPI(
        title="sessionstore",
        version=__version__,
        summary="Redis-backed distributed sessions: the reference server.",
        lifespan=lifespan,
        # Starlette's limiter: a declared Content-Length over the limit is refused
        # before reading, a streamed body the moment it passes the limit (413).
        max_body_size=settings.server.max_body_bytes,
    )
    install_error_handlers(app)
    app.include_router(sessions.router)
    app.include_router(current.router(settings.server.session_header))
    app.include_router(observability.router)
    app.include_router(breaker_routes.router)
    app.include_router(upstreams.router_for(settings.server.session_header))
    install_openapi(app, settings)
    body_limits = BodyReadLimits(
        timeout=settings.server.request_body_timeout.total_seconds(),
        max_bytes=settings.server.max_body_bytes,
    )
    # add_middleware wraps: the last added runs first. Unexpected errors become a 500
    # inside the session middleware, so the lease is returned as for any answer.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(
        SessionMiddleware,
        body_limits=body_limits,
        header=settings.server.session_header,
        cookie=_cookie(settings),
        renew_expired=settings.server.renew_expired_sessions,
        exclude_paths=UNSESSIONED_PATHS,
        inflight=inflight,
        drain_timeout=settings.server.drain_timeout.total_seconds(),
        redis_timeout=settings.server.request_redis_timeout.total_seconds(),
    )
    # Every body is read whole (408 late, 413 large) before anything else runs.
    app.add_middleware(BodyLimits, limits=body_limits, reads=body_reads)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(AllowedMethods, routes_of=app)
    return app


def _cookie(settings: Settings) -> SessionCookie | None:
    if settings.server.cookie_secret is None:
        return None
    return SessionCookie(secret=settings.server.cookie_secret, name=settings.server.session_cookie)
