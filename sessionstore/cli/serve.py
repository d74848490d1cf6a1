"""``sessionstore serve``: run the reference server with uvicorn."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import typer

from ..exceptions import InvalidInput
from ._support import EXIT_USAGE, fail, load_settings, store_url

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .._environment import Settings


def serve(
    host: str | None = typer.Option(None, help="Bind address [SESSIONSTORE_SERVER_HOST]."),
    port: int | None = typer.Option(None, help="TCP port [SESSIONSTORE_SERVER_PORT]."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    access_log: bool = typer.Option(
        False, help="Log every request (session ids cut to their first characters)."
    ),
    insecure_open_management: bool = typer.Option(
        False,
        "--insecure-open-management",
        help="Serve the management routes (create, list by user, any session) to "
        "anonymous callers: a machine of your own only "
        "[SESSIONSTORE_INSECURE_OPEN_MANAGEMENT].",
    ),
) -> None:
    """Serve the session API, /session-health and /metrics.

    Needs SESSIONSTORE_REDIS_URL and a management credential
    (SESSIONSTORE_SERVICE_TOKENS or SESSIONSTORE_ADMIN_TOKEN; see docs/security.md).
    On SIGTERM or Ctrl-C the replica stops
    accepting connections, lets running requests finish for up to
    SESSIONSTORE_DRAIN_TIMEOUT, returns their request leases and exits.
    """
    import uvicorn

    from ..server._protocol import header_deadline_protocol

    settings = load_settings()
    store_url(settings)
    if insecure_open_management:
        server = settings.server.model_copy(update={"insecure_open_management": True})
        settings = settings.model_copy(update={"server": server})
    try:
        app = served_app(settings)
    except InvalidInput as exc:
        fail(str(exc), EXIT_USAGE)
    uvicorn.run(
        app,
        log_config=_log_config(log_level),
        host=host or settings.server.host,
        port=settings.server.port if port is None else port,
        log_level=log_level,
        access_log=access_log,
        # uvicorn waits this long for running requests, then cancels them; the
        # middleware's drain then returns whatever leases are left.
        timeout_graceful_shutdown=math.ceil(settings.server.drain_timeout.total_seconds()),
        # X-Forwarded-* only from the configured load balancers; none by default, so a
        # client cannot name another address for itself (access log, breaker audit).
        proxy_headers=bool(settings.server.trusted_proxies),
        forwarded_allow_ips=settings.server.trusted_proxies or None,
        # Slow clients: a deadline for headers (the body's is the app's), a bound on
        # connections; h11, which the header deadline extends.
        http=header_deadline_protocol(settings.server.request_header_timeout.total_seconds()),
        limit_concurrency=settings.server.limit_concurrency,
        timeout_keep_alive=math.ceil(settings.server.keep_alive_timeout.total_seconds()),
        lifespan="on",
    )


def served_app(settings: Settings) -> FastAPI:
    """The app `serve` runs: the reference server, plus the demo route when
    ``SESSIONSTORE_DEMO_ROUTES`` is on (the dev fleet's replicas; never in production).

    The demo route is dev code (``sessionstore.cli.dev``), not part of the server: it is
    imported only then.
    """
    from ..server import create_app

    app = create_app(settings)
    if settings.server.demo_routes:
        from .dev.demo_routes import mount_demo_routes

        mount_demo_routes(app)
    return app


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config, with the access lines passed through
    `AccessLogRedactor` (session ids cut, no query value that could be a secret), and
    the ``sessionstore`` loggers at `level` on its default handler (otherwise only
    their warnings would show, through Python's last-resort handler)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_access"] = {
        "()": "sessionstore.server._access_log.AccessLogRedactor"
    }
    config["handlers"]["access"]["filters"] = ["redact_access"]
    config["loggers"]["sessionstore"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
