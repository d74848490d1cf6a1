"""How sessionstore errors answer over HTTP: one table, used by the middleware and the server.

Every refusal is a JSON body ``{"error": <code>, "detail": <message>, ...context}``
with the status below; waits get a ``Retry-After`` header in whole seconds.

=========================  ======  =================================
error                      status  code
=========================  ======  =================================
InvalidSessionId           400     invalid_session_id
PayloadTooLarge            413     payload_too_large
InvalidInput               422     invalid_input
SessionNotFound            404     session_not_found
SessionExpired             410     session_expired
SessionClosed              410     session_closed
SessionRotated             410     session_rotated
VersionConflict            412     version_conflict
ConflictError              409     conflict
SessionLimitExceeded       429     session_limit_exceeded
GlobalLimitExceeded        503     capacity_exceeded
LockError                  409     lock_conflict
BreakerOpen                503     breaker_open
UpstreamUnavailable        503     upstream_unavailable
UpstreamRejected           422     upstream_rejected (the client must change something:
                                   credentials, TLS, mailbox... see `CLIENT_FIXABLE`)
UpstreamRejected           502     upstream_rejected (any other reason)
UpstreamNotFound           404     upstream_not_found
UpstreamError              502     upstream_error
BackendUnavailable         503     backend_unavailable
=========================  ======  =================================

Upstream answers carry ``upstream`` and, for the two subclasses, the classifier's
``reason`` (``auth_failed``, ``timeout``...); ``upstream_unavailable`` also
``attempts``. Unlike the other 503s, ``upstream_unavailable`` does not promise that
nothing was done: an upstream write whose answer was lost may have happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from ..exceptions import (
    BackendUnavailable,
    BreakerOpen,
    ConflictError,
    InvalidInput,
    InvalidSessionId,
    LimitExceeded,
    LockError,
    PayloadTooLarge,
    SessionGone,
    SessionLimitExceeded,
    SessionNotFound,
    SessionStoreError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
    VersionConflict,
)

#: Reasons of `UpstreamRejected` that the client can fix (new credentials, TLS on,
#: another mailbox...): 422. Any other reason (a malformed command, an answer we did
#: not expect) is the gateway's problem with the upstream: 502.
CLIENT_FIXABLE = frozenset(
    {
        "auth_failed",
        "credentials_expired",
        "credential_unavailable",
        "tls_required",
        "tls_verify_failed",
        "contact_admin",
        "invalid_input",
        "nonexistent",
        "already_exists",
        "cannot",
        "no_permission",
        "over_quota",
        "limit",
    }
)


@dataclass(frozen=True)
class Problem:
    """An HTTP refusal: status, machine-readable code, message and context.

    .. versionadded:: 0.1
    """

    status: int
    code: str
    detail: str
    #: Seconds a client should wait before retrying (sent as ``Retry-After``).
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        """The JSON response for this problem (a Starlette response, also a plain ASGI app)."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        body = {"error": self.code, "detail": self.detail, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _gone(exc: SessionGone) -> Problem:
    extra: dict[str, Any] = {"session_id": exc.session_id, "status": exc.status}
    if exc.superseded_by:
        extra["superseded_by"] = exc.superseded_by
    return Problem(410, f"session_{exc.status}", str(exc), extra=extra)


def _limit(exc: LimitExceeded) -> Problem:
    if isinstance(exc, SessionLimitExceeded):
        return Problem(
            429,
            "session_limit_exceeded",
            str(exc),
            retry_after=exc.retry_after,
            extra={"session_id": exc.session_id, "limit": exc.limit},
        )
    return Problem(
        503, "capacity_exceeded", str(exc), retry_after=exc.retry_after, extra={"limit": exc.limit}
    )


def _rejected(exc: UpstreamRejected) -> Problem:
    status = 422 if exc.reason in CLIENT_FIXABLE else 502
    extra = {"upstream": exc.upstream, "reason": exc.reason or None}
    return Problem(status, "upstream_rejected", str(exc), extra=extra)


def _unavailable(exc: UpstreamUnavailable) -> Problem:
    extra = {"upstream": exc.upstream, "reason": exc.reason or None, "attempts": exc.attempts}
    # Always a Retry-After: the pool's own hint, else a second.
    wait = exc.retry_after if exc.retry_after is not None else 1.0
    return Problem(503, "upstream_unavailable", str(exc), retry_after=wait, extra=extra)


#: How each error answers, looked up along the error's class hierarchy.
_ANSWERS: dict[type[SessionStoreError], Callable[[Any], Problem]] = {
    InvalidSessionId: lambda e: Problem(400, "invalid_session_id", str(e)),
    PayloadTooLarge: lambda e: Problem(413, "payload_too_large", str(e), extra={"limit": e.limit}),
    InvalidInput: lambda e: Problem(422, "invalid_input", str(e)),
    SessionNotFound: lambda e: Problem(
        404, "session_not_found", str(e), extra={"session_id": e.session_id}
    ),
    SessionGone: _gone,
    VersionConflict: lambda e: Problem(
        412,
        "version_conflict",
        str(e),
        extra={"session_id": e.session_id, "version": e.actual},
        headers={"ETag": etag(e.actual)},
    ),
    ConflictError: lambda e: Problem(409, "conflict", str(e), extra={"session_id": e.session_id}),
    LimitExceeded: _limit,
    LockError: lambda e: Problem(409, "lock_conflict", str(e)),
    BreakerOpen: lambda e: Problem(
        503, "breaker_open", str(e), retry_after=e.retry_after, extra={"breaker": e.breaker}
    ),
    UpstreamUnavailable: _unavailable,
    UpstreamRejected: _rejected,
    UpstreamNotFound: lambda e: Problem(
        404, "upstream_not_found", str(e), extra={"upstream": e.upstream}
    ),
    UpstreamError: lambda e: Problem(502, "upstream_error", str(e), extra={"upstream": e.upstream}),
    # The driver's message may name hosts; the client only needs to know to retry.
    BackendUnavailable: lambda e: Problem(
        503, "backend_unavailable", "the session store is unavailable", e.retry_after
    ),
}


def problem_for(exc: SessionStoreError) -> Problem:
    """The HTTP answer for a sessionstore error (see the module table).

    .. versionadded:: 0.1
    """
    for cls in type(exc).__mro__:
        answer = _ANSWERS.get(cls)
        if answer is not None:
            return answer(exc)
    return Problem(500, "internal_error", "the session store failed")


def etag(version: int) -> str:
    """The strong ETag of a session version: ``"<version>"``.

    .. versionadded:: 0.1
    """
    return f'"{version}"'


def shutting_down() -> Problem:
    """The answer to a session request that arrives while the replica drains."""
    return Problem(
        503,
        "shutting_down",
        "this replica is shutting down; retry on another",
        retry_after=1,
        headers={"Connection": "close"},
    )


def draft_conflict(exc: VersionConflict) -> Problem:
    """The answer when a request's session changes lost to a concurrent write.

    .. versionadded:: 0.1
    """
    return Problem(
        409,
        "session_conflict",
        "the session changed while this request ran; its changes were not saved",
        extra={"session_id": exc.session_id, "version": exc.actual},
    )
