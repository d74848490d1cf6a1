"""The HTTP answers `sessionstore.mcp` gives itself: JSON-RPC error bodies, as the SDK writes them.

A 404 is what MCP clients answer with a fresh ``initialize``, so every id that
cannot lead to a live session (unknown, ended, malformed, someone else's) gets
it. Limits answer 429/503 and an unreachable Redis 503, with ``Retry-After``.
"""

from __future__ import annotations

from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.responses import Response

from ..exceptions import (
    BackendUnavailable,
    GlobalLimitExceeded,
    InvalidInput,
    PayloadTooLarge,
    SessionGone,
    SessionLimitExceeded,
    SessionNotFound,
    SessionStoreError,
)

#: The message of every "this id leads nowhere" answer (the SDK's wording).
SESSION_NOT_FOUND = "Session not found"


def error_response(
    status: int, message: str, code: int = INVALID_REQUEST, *, retry_after: int | None = None
) -> Response:
    """A JSON-RPC error (no request id) with HTTP `status`."""
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def not_found() -> Response:
    """The 404 that sends an MCP client back to ``initialize``."""
    return error_response(404, SESSION_NOT_FOUND)


def expired_request_state() -> Response:
    """A 2026-07-28 round whose call session has ended: what the SDK answers for an
    expired ``requestState`` (the client starts the call again without it)."""
    return error_response(400, "Invalid or expired requestState", INVALID_PARAMS)


def store_refusal(exc: SessionStoreError) -> Response:
    """The answer to a store refusal met while serving an MCP request."""
    if isinstance(exc, PayloadTooLarge):
        return error_response(413, "Initialize params too large")
    if isinstance(exc, SessionGone | SessionNotFound | InvalidInput):
        return not_found()
    if isinstance(exc, SessionLimitExceeded):
        return error_response(429, "Too many requests in flight for this session", retry_after=1)
    if isinstance(exc, GlobalLimitExceeded):
        return error_response(503, "Too many requests in flight", INTERNAL_ERROR, retry_after=1)
    if isinstance(exc, BackendUnavailable):
        return error_response(503, "Session store unavailable", INTERNAL_ERROR, retry_after=1)
    return error_response(500, "Session store error", INTERNAL_ERROR)
