"""Exception handlers: every refusal is one documented shape, ``{"error", "detail", ...}``.

- `SessionStoreError`: its status and body from `problem_for`.
- Schema errors (`RequestValidationError`): 422 ``invalid_request`` with the
  fields and reasons in ``errors``, never the values sent (a body may hold a
  secret: an upstream password).
- `HTTPException` (bearer checks, ``If-Match``, a body that is not UTF-8 JSON,
  unknown paths): its status with a code named after it (a wrong method is
  answered before routing, by `AllowedMethods`).
- Anything else: 500 ``internal_error`` (logged with the route template,
  never the path: paths carry session ids), answered by `UnexpectedErrors`
  so that the keep-alive connection stays open.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..asgi import Problem, problem_for
from ..exceptions import SessionStoreError

logger = logging.getLogger("sessionstore.server")

#: Codes of the refusals that FastAPI and the routes raise as `HTTPException`.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def _route_template(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", "?"))


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SessionStoreError)
    problem = problem_for(exc)
    if problem.status >= 500:
        logger.warning("%s %s: %s", request.method, _route_template(request), exc)
    return problem.response()


def _error_fields(error: Any) -> dict[str, Any]:
    # The field and the reason, not "input" or "ctx": a misspelled or overlong secret
    # would come back in them.
    return {key: error[key] for key in ("loc", "msg", "type") if key in error}


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_error_fields(error) for error in exc.errors()]
    where = ", ".join(".".join(str(part) for part in e.get("loc", ())) for e in errors[:3])
    detail = f"the request does not match the API's schema ({where})" if where else ""
    body = {"error": "invalid_request", "detail": detail or "invalid request", "errors": errors}
    return JSONResponse(jsonable_encoder(body), status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    code = HTTP_CODES.get(exc.status_code)
    if code is None:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return Problem(exc.status_code, code, detail, headers=headers).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("%s %s failed", request.method, _route_template(request), exc_info=exc)
    return Problem(500, "internal_error", "the server failed to answer").response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal with one shape: `SessionStoreError` by `problem_for`, schema
    errors with 422 ``invalid_request``, `HTTPException` by its status, anything else 500."""
    app.add_exception_handler(SessionStoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


class UnexpectedErrors:
    """Answer an error no handler knows with the 500 ``internal_error`` problem, and keep
    the connection: the handler `install_error_handlers` registers for `Exception` runs in
    Starlette's outermost middleware, which re-raises to the server after answering, and
    uvicorn then closes the keep-alive connection. Installed inside the session middleware
    (the lease is returned as for any answer); an error after the response started is
    re-raised.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            route = str(getattr(scope.get("route"), "path", "?"))
            logger.exception("%s %s failed", scope.get("method"), route, exc_info=exc)
            problem = Problem(500, "internal_error", "the server failed to answer")
            await problem.response()(scope, receive, send)
