"""The session-id cookie: a signed session id, never session data.

The value is ``<session id>.<signature>`` (itsdangerous, HMAC-SHA1 over a
salted key derived from the secret). A cookie with a bad signature is treated
as absent, so a forged or tampered id never reaches the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import itsdangerous
from pydantic import SecretStr

#: Keeps these signatures apart from anything else signed with the same secret.
_SALT = "sessionstore.session-id"


@dataclass(frozen=True)
class SessionCookie:
    """Where and how the signed session-id cookie is written.

    Args:
        secret: signing secret; keep it out of logs and out of Redis.
        name: cookie name.
        max_age: cookie lifetime in seconds (None: a browser-session cookie);
            the session's own deadlines still apply.
        path / domain / same_site / secure: the usual cookie attributes.

    .. versionadded:: 0.1
    """

    secret: SecretStr
    name: str = "sessionstore"
    max_age: int | None = None
    path: str = "/"
    domain: str | None = None
    same_site: Literal["lax", "strict", "none"] = "lax"
    secure: bool = True

    def _signer(self) -> itsdangerous.Signer:
        return itsdangerous.Signer(self.secret.get_secret_value(), salt=_SALT)

    def sign(self, session_id: str) -> str:
        """The cookie value for `session_id`."""
        return self._signer().sign(session_id).decode("ascii")

    def unsign(self, value: str) -> str | None:
        """The session id in a cookie value, or None when the signature is wrong."""
        try:
            return self._signer().unsign(value).decode("ascii")
        except (itsdangerous.BadSignature, UnicodeError):
            return None

    def set_header(self, session_id: str) -> str:
        """A ``Set-Cookie`` value carrying `session_id`."""
        parts = [f"{self.name}={self.sign(session_id)}", f"Path={self.path}", "HttpOnly"]
        parts.append(f"SameSite={self.same_site.capitalize()}")
        if self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
        return "; ".join(parts + self._tail())

    def clear_header(self) -> str:
        """A ``Set-Cookie`` value that removes the cookie."""
        parts = [f"{self.name}=", f"Path={self.path}", "Max-Age=0", "HttpOnly"]
        parts.append(f"SameSite={self.same_site.capitalize()}")
        return "; ".join(parts + self._tail())

    def _tail(self) -> list[str]:
        tail = []
        if self.domain:
            tail.append(f"Domain={self.domain}")
        if self.secure:
            tail.append("Secure")
        return tail
