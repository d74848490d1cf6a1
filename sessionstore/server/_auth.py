"""Bearer tokens of the reference server, compared in constant time.

Two tokens, two powers: ``SESSIONSTORE_HEALTH_TOKEN`` lets a monitor read
``/session-health``; ``SESSIONSTORE_ADMIN_TOKEN`` lets an operator steer the
fleet's circuit breakers. An unset token turns its endpoints off (403): no
endpoint is ever open because a setting was forgotten.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
#: FastAPI dependency: the request's bearer credentials, if any (documented in OpenAPI).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def check_bearer(
    expected: SecretStr | None,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    disabled: str,
) -> None:
    """Refuse the call unless it carries ``Authorization: Bearer <expected>``.

    Args:
        expected: the configured token; None turns the endpoint off.
        credentials: what the request sent.
        disabled: the 403 message when no token is configured (names the setting).

    Raises:
        HTTPException: 403 when no token is configured, 401 for a missing or wrong one.
    """
    if expected is None:
        raise HTTPException(403, disabled)
    given = credentials.credentials if credentials is not None else ""
    # Constant time: the comparison must not reveal how much of a guess was right.
    if credentials is None or not hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
