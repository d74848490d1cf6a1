"""Who is calling: bearer tokens by role, and a session's own client.

Three token roles (docs/security.md has the table of who may call what):

- ``SESSIONSTORE_HEALTH_TOKEN``: a monitor reads ``/session-health``;
- ``SESSIONSTORE_SERVICE_TOKENS``: a backend creates sessions for users, lists a
  user's sessions and reads or steers any session;
- ``SESSIONSTORE_ADMIN_TOKEN``: an operator steers the fleet's breakers and
  administers upstreams; an admin may do whatever a service may.

Each setting takes several comma-separated tokens, so a token is rotated by
adding the new one, moving the callers, then removing the old one. Only
keyed digests of them are kept (`TokenDigests`): the plaintext is dropped from
the settings the server keeps, and a comparison hashes the offered token and
checks it against every digest in constant time, so neither a token's
content nor which token matched shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from .._environment import Settings

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
#: FastAPI dependency: the request's bearer credentials, if any (documented in OpenAPI).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class Role(StrEnum):
    """What a bearer token lets its holder do."""

    #: Read ``/session-health``.
    HEALTH = "health"
    #: Create sessions, list a user's sessions, read and steer any session.
    SERVICE = "service"
    #: Everything a service may, plus breaker control and upstream administration.
    ADMIN = "admin"


def split_tokens(value: SecretStr | None) -> list[str]:
    """The tokens of a comma-separated setting (blanks dropped)."""
    if value is None:
        return []
    return [token.strip() for token in value.get_secret_value().split(",") if token.strip()]


class TokenDigests:
    """The tokens of one role, as keyed digests; no plaintext is kept.

    The key is random per instance (per process), so the digests in memory
    cannot be matched against anything outside it.

    .. versionadded:: 0.1
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._key = secrets.token_bytes(32)
        self._digests = tuple(self._digest(token) for token in tokens)

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"TokenDigests({len(self._digests)} token(s))"

    def matches(self, token: str) -> bool:
        """True when `token` is one of the role's tokens (every digest is compared)."""
        offered = self._digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(offered, digest)
        return found


@dataclass(frozen=True, repr=False)
class AccessTokens:
    """Every role's token digests, and whether management is open to anonymous callers.

    .. versionadded:: 0.1
    """

    health: TokenDigests
    service: TokenDigests
    admin: TokenDigests
    #: ``SESSIONSTORE_INSECURE_OPEN_MANAGEMENT``: an anonymous caller gets the
    #: service role (dev only; the server refuses to start without a credential
    #: otherwise).
    open_management: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessTokens:
        """Digests of the settings' tokens."""
        return cls(
            health=TokenDigests(split_tokens(settings.server.health_token)),
            service=TokenDigests(split_tokens(settings.server.service_tokens)),
            admin=TokenDigests(split_tokens(settings.server.admin_token)),
            open_management=settings.server.insecure_open_management,
        )

    def __repr__(self) -> str:
        return (
            f"AccessTokens(health={len(self.health)}, service={len(self.service)}, "
            f"admin={len(self.admin)}, open_management={self.open_management})"
        )

    @property
    def management_credential(self) -> bool:
        """True when some token can call the management routes (service or admin)."""
        return bool(self.service) or bool(self.admin)

    def role(self, credentials: HTTPAuthorizationCredentials | None) -> Role | None:
        """The strongest role the request's bearer token has; None when it sent none.

        Raises:
            HTTPException: 401 for a bearer token that no role has.
        """
        if credentials is None:
            return None
        token = credentials.credentials
        # Every role is compared, whatever matched first: the timing names no role.
        admin, service, health = (
            self.admin.matches(token),
            self.service.matches(token),
            self.health.matches(token),
        )
        if admin:
            return Role.ADMIN
        if service:
            return Role.SERVICE
        if health:
            return Role.HEALTH
        raise unauthorized("wrong bearer token")


def without_tokens(settings: Settings) -> Settings:
    """`settings` with the bearer tokens dropped: the server keeps only their digests."""
    server = settings.server.model_copy(
        update={"health_token": None, "service_tokens": None, "admin_token": None}
    )
    return settings.model_copy(update={"server": server})


def unauthorized(detail: str) -> HTTPException:
    """401 with the bearer challenge."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def require_role(
    tokens: AccessTokens,
    credentials: HTTPAuthorizationCredentials | None,
    *allowed: Role,
    disabled: str,
) -> Role:
    """Refuse the call unless its bearer token has one of the `allowed` roles.

    Args:
        tokens: the server's token digests.
        credentials: what the request sent.
        allowed: the roles that may call.
        disabled: the 403 message when no role of `allowed` has a token (names the setting).

    Raises:
        HTTPException: 403 when none of `allowed` has a token configured, 401 for a
            missing token or one of another role.
    """
    configured = {
        Role.HEALTH: tokens.health,
        Role.SERVICE: tokens.service,
        Role.ADMIN: tokens.admin,
    }
    if not any(configured[role] for role in allowed):
        raise HTTPException(403, disabled)
    role = tokens.role(credentials)
    if role is None:
        raise unauthorized("missing bearer token")
    if role not in allowed:
        raise unauthorized(f"this bearer token may not call this ({role.value} token)")
    return role
