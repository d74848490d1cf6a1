"""Exception handlers: sessionstore errors become their documented HTTP answers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..asgi import problem_for
from ..exceptions import SessionStoreError

logger = logging.getLogger("sessionstore.server")


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SessionStoreError)
    problem = problem_for(exc)
    if problem.status >= 500:
        # The route template, not the path: paths carry session ids (credentials).
        route = getattr(request.scope.get("route"), "path", "?")
        logger.warning("%s %s: %s", request.method, route, exc)
    return problem.response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every `SessionStoreError` with its status and JSON body (see `problem_for`)."""
    app.add_exception_handler(SessionStoreError, _store_error)
