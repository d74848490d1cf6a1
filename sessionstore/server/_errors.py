"""Exception handlers: sessionstore errors become their documented HTTP answers; validation
errors of bodies that carry secrets never echo what was sent."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response

from ..asgi import problem_for
from ..exceptions import SessionStoreError
from .routes.upstreams import REGISTER_PATH

logger = logging.getLogger("sessionstore.server")


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SessionStoreError)
    problem = problem_for(exc)
    if problem.status >= 500:
        # The route template, not the path: paths carry session ids (credentials).
        route = getattr(request.scope.get("route"), "path", "?")
        logger.warning("%s %s: %s", request.method, route, exc)
    return problem.response()


#: Routes whose request bodies may hold a secret (upstream registration).
SECRET_BODY_ROUTES = frozenset({REGISTER_PATH})


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    route = getattr(request.scope.get("route"), "path", None)
    if route not in SECRET_BODY_ROUTES:
        return await request_validation_exception_handler(request, exc)
    # FastAPI's answer minus "input": a misspelled or overlong "secret" would come back.
    errors = [{k: v for k, v in error.items() if k != "input"} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every `SessionStoreError` with its status and JSON body (see `problem_for`),
    and schema errors with FastAPI's 422 (without the values sent, on `SECRET_BODY_ROUTES`)."""
    app.add_exception_handler(SessionStoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
