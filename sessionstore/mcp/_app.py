"""`mcp_app`: an SDK server as an ASGI app whose sessions roam the fleet (run it everywhere)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.lowlevel.server import Server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import SessionStore, Settings, create_client
from ..exceptions import BackendUnavailable
from ._fastmcp import fastmcp_server
from ._logs import redact_sdk_logs
from ._manager import RoamingSessionManager
from ._metrics import McpMetrics
from ._request_state import CallSessions
from ._sdk import check_sdk
from ._subscriptions import RedisSubscriptionBus

logger = logging.getLogger("sessionstore.mcp")


def lowlevel_server(server: Any) -> Server[Any]:
    """The SDK's low-level `Server` behind `server` (``MCPServer``, ``FastMCP`` or `Server`)."""
    if isinstance(server, Server):
        return server
    if type(server).__name__ == "FastMCP":
        lowlevel = fastmcp_server(server)
        if not isinstance(lowlevel, Server):
            raise TypeError("this FastMCP does not run on the SDK's low-level Server")
        return lowlevel
    # MCPServer builds its low-level server's session manager here; the manager
    # names the server it serves (a public attribute).
    server.streamable_http_app()
    lowlevel = server.session_manager.app
    if not isinstance(lowlevel, Server):
        raise TypeError(f"not an MCP server: {type(server).__name__}")
    return lowlevel


def mcp_app(
    server: Any,
    settings: Settings,
    *,
    path: str = "/mcp",
    json_response: bool = False,
    transport_security: TransportSecuritySettings | None = None,
    retry_interval: int | None = None,
    idle_timeout: float | None = 30 * 60,
    max_request_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    subscriptions: RedisSubscriptionBus | None = None,
    resumable: bool = True,
) -> Starlette:
    """A Starlette app serving `server` at `path` with sessions kept in the store.

    Run the same app on every replica: any replica serves any session. Also
    serves ``/metrics`` (Prometheus) and ``/healthz`` (liveness, with the pid).

    Args:
        server: an ``MCPServer``, a ``FastMCP`` (4.x) or the SDK's low-level `Server`.
        settings: the store's settings (``SESSIONSTORE_*``), read at the edge.
        path: the MCP endpoint.
        json_response: answer with JSON bodies instead of SSE streams.
        transport_security: the SDK's DNS-rebinding protection (off by default:
            replicas sit behind a load balancer).
        retry_interval: SSE ``retry`` hint (ms) for resumable streams.
        idle_timeout: seconds before the SDK reaps an unused local copy (the
            session lives on; the next request rebuilds the copy).
        max_request_body_size: larger bodies get 413.
        resumable: keep SSE events in Redis (`RedisEventStore`): streams resume on
            any replica and carry messages from any replica. Off, each replica
            serves only its own messages and nothing resumes (two event writes per
            call fewer).
        subscriptions: the bus given to ``MCPServer(subscriptions=...)``, run by
            this app's lifespan (2026-07-28 ``subscriptions/listen`` across replicas).

    .. versionadded:: 0.1
    """
    check_sdk()
    redact_sdk_logs()
    if settings.redis_url is None:
        raise ValueError("mcp_app needs SESSIONSTORE_REDIS_URL (settings.redis_url)")
    metrics = McpMetrics()
    manager = RoamingSessionManager(
        lowlevel_server(server),
        json_response=json_response,
        security_settings=transport_security,
        retry_interval=retry_interval,
        idle_timeout=idle_timeout,
        max_request_body_size=max_request_body_size,
        resumable=resumable,
        metrics=metrics,
        # 2026-07-28 rounds sealed with fleet_request_state_security name their call
        # session; the manager reads it with the same keys.
        call_sessions=CallSessions.from_settings(settings),
    )
    redis_settings = settings.store_redis(settings.redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = create_client(redis_settings)
        store = SessionStore(client, settings.session)
        try:
            await store.load_scripts()
        except BackendUnavailable:
            # Serve anyway: requests answer 503 until Redis is back.
            logger.warning("Redis unreachable at start-up; MCP requests answer 503 until it is")
        try:
            async with contextlib.AsyncExitStack() as running:
                if subscriptions is not None:
                    await running.enter_async_context(subscriptions.run(store))
                await running.enter_async_context(manager.run(store))
                app.state.mcp_manager = manager
                yield
        finally:
            await client.aclose()

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    return _McpStarlette(
        manager,
        path,
        routes=[
            Route(path, endpoint=manager, methods=list(_MCP_METHODS)),
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


#: The methods of the MCP endpoint (others get Starlette's 405).
_MCP_METHODS = ("GET", "POST", "DELETE")


class _McpStarlette(Starlette):
    """Starlette that hands MCP requests straight to the manager.

    Every MCP message would otherwise pass Starlette's error and exception
    middleware and its router, each wrapping `send` again: per tool call that is
    as much Python as the rest of the app's own work. A request that the router
    would route to the endpoint anyway (its exact path, one of its methods, no
    root path, no middleware added) skips them; anything else, ``/metrics`` and
    the lifespan go through Starlette as before.
    """

    def __init__(self, manager: RoamingSessionManager, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mcp = manager
        self._mcp_path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == self._mcp_path
            and scope["method"] in _MCP_METHODS
            and not scope.get("root_path")
            and not self.user_middleware
        ):
            scope["app"] = self
            await self._mcp(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
