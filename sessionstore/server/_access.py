"""The access model of the session routes: a session's own client, a service, an admin.

A session id is a bearer secret, and the id in a route's path is not proof
of holding it (paths end up in proxy logs, browser histories, referrers): a
session's own client names its session in the session header (or the signed
cookie), which `SessionMiddleware` has already checked and leased. Anything
that reaches beyond one's own session (creating sessions for a user, listing
a user's sessions, reading or steering another session) needs a service or
admin bearer token. docs/security.md has the whole table.
"""

from __future__ import annotations

import hmac
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from ..asgi._middleware import RENEWED_FROM
from ..asgi.dependencies import optional_session
from ._auth import Credentials, Role, require_role, unauthorized
from ._state import State


class Caller(StrEnum):
    """Who is calling a route about one session."""

    #: The session's own client (its id in the session header or signed cookie).
    OWNER = "owner"
    #: A backend with a service token.
    SERVICE = "service"
    #: An operator with the admin token.
    ADMIN = "admin"


def _own(request: Request, session_id: str) -> bool | None:
    """True when the request's session is `session_id`, False when it is another, None when
    the request named none. A session the middleware renewed is still its client's."""
    session = optional_session(request)
    if session is None:
        return None
    renewed_from = getattr(request.state, RENEWED_FROM, None)
    named = renewed_from if isinstance(renewed_from, str) else session.id
    return hmac.compare_digest(named.encode(), session_id.encode())


async def session_caller(
    session_id: Annotated[str, Path()],  # described by the route's own parameter
    request: Request,
    state: State,
    credentials: Credentials,
) -> Caller:
    """Dependency: a service or admin token if one is sent, else this session's own client.

    Dependencies run before the body is validated: a refused caller learns
    nothing about what its body lacks. Async, though it awaits nothing: FastAPI
    runs a plain function in a thread, which cost a read by id 4/5 of its rate.

    Raises:
        HTTPException: 401 for no credential (or a wrong token), 403 for a request
            naming another session.
    """
    access = state.access
    role = access.role(credentials)
    if role is Role.ADMIN:
        return Caller.ADMIN
    if role is Role.SERVICE:
        return Caller.SERVICE
    header = state.settings.server.session_header
    if role is Role.HEALTH:
        raise unauthorized("the health token reads /session-health only")
    own = _own(request, session_id)
    if own:
        return Caller.OWNER
    if own is False:
        raise HTTPException(403, f"the {header} header names another session")
    if access.open_management:
        return Caller.SERVICE
    raise unauthorized(f"send this session's id in the {header} header, or a service token")


async def service_caller(state: State, credentials: Credentials) -> Caller:
    """Dependency of the management routes: a service or admin token.

    Raises:
        HTTPException: 401 without one (unless management is open, see `AccessTokens`).
    """
    access = state.access
    if credentials is None and access.open_management:
        return Caller.SERVICE
    role = require_role(
        access,
        credentials,
        Role.SERVICE,
        Role.ADMIN,
        disabled="management disabled: set SESSIONSTORE_SERVICE_TOKENS",
    )
    return Caller.ADMIN if role is Role.ADMIN else Caller.SERVICE


#: The caller of a route about one session (``{session_id}`` in its path).
SessionCaller = Annotated[Caller, Depends(session_caller)]
#: The caller of a management route (a service or admin token).
ServiceCaller = Annotated[Caller, Depends(service_caller)]
