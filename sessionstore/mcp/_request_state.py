"""Request state that every replica accepts, and the call sessions it names (2026-07-28).

On 2026-07-28 there is no session on the wire: a tool that needs input answers
``InputRequiredResult`` with an opaque ``requestState``, sealed by the SDK's
`RequestStateSecurity`, and the client retries the call carrying it, to any
replica. The SDK's default key is per process (`RequestStateSecurity.ephemeral`),
so another replica refuses the state. `fleet_request_state_security` derives the
keys from the fleet's secret (``SESSIONSTORE_SECRET_KEY``, newest key first, so
rotation works as it does for credentials), the same on every replica.

Its codec also seals the *call session* into the state: the rounds of one call
(each answered ``InputRequiredResult`` until the last) are the closest thing the
revision has to a session. The first round that asks for input draws a session
id (`CallRound`); the manager creates that session before the answer leaves, and
every later round, on any replica, names it through the state it carries: it
takes that session's request lease (``max_requests_per_session``) and
`mcp_session()` gives its attributes.
"""

from __future__ import annotations

import json
import logging
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mcp.server.request_state import (
    AESGCMRequestStateCodec,
    InvalidRequestState,
    RequestStateSecurity,
)

from .. import SessionStore, Settings
from .._ids import new_session_id
from ..exceptions import SessionStoreError

logger = logging.getLogger("sessionstore.mcp")

#: The metadata key that marks a call session (never a handshake session: a request
#: naming it with ``Mcp-Session-Id`` gets 404).
CALL_METADATA_KEY = "mcp_call"
_INFO = b"sessionstore mcp request state v1"
#: Between the call session's id and the SDK's envelope in a sealed state.
_SEPARATOR = b"\n"
#: Seconds a sealed request state stays valid, and so how long a call session waits
#: for its next round: one default for both, so neither outlives the other.
STATE_TTL_SECONDS = 600.0


@dataclass
class CallRound:
    """One round of a 2026-07-28 call as the codec needs to know it (the manager binds
    one to `CURRENT_ROUND` while the SDK handles the request)."""

    #: The call session the round's state named, if any.
    session_id: str | None
    #: Shards of the store, to draw a new session id in.
    shards: int
    #: An id drawn for the call session when this round sealed a state without one.
    drawn: str | None = None
    #: Whether this round sealed a state (asked for more input).
    sealed: bool = False

    def session_to_seal(self) -> str:
        """The call session the state sealed now names (drawn on first use)."""
        self.sealed = True
        if self.session_id is not None:
            return self.session_id
        if self.drawn is None:
            self.drawn = new_session_id(secrets.randbelow(self.shards))
        return self.drawn


#: The 2026-07-28 round the SDK is handling in this context, if the manager bound one.
CURRENT_ROUND: ContextVar[CallRound | None] = ContextVar("sessionstore_mcp_round", default=None)


class CallSessionCodec:
    """The SDK's AES-GCM codec with the call session sealed in beside its envelope."""

    def __init__(self, keys: list[bytes]) -> None:
        self._inner = AESGCMRequestStateCodec(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> CallSessionCodec | None:
        """The codec of the fleet's secret keys; None without a secret."""
        keys = _keys(settings)
        return cls(keys) if keys else None

    def seal(self, payload: bytes) -> str:
        """Seal `payload` with the current round's call session."""
        current = CURRENT_ROUND.get()
        session_id = current.session_to_seal() if current is not None else ""
        return self._inner.seal(session_id.encode() + _SEPARATOR + payload)

    def unseal(self, token: str) -> bytes:
        """The SDK's envelope inside `token`.

        Raises:
            InvalidRequestState: not a token of these keys, or not of this codec.
        """
        _, separator, payload = self._inner.unseal(token).partition(_SEPARATOR)
        if not separator:
            raise InvalidRequestState("malformed")
        return payload

    def session_of(self, token: str) -> str | None:
        """The call session a state names; None for a state that names none or is not
        ours (the SDK refuses the latter itself)."""
        try:
            raw = self._inner.unseal(token)
        except InvalidRequestState:
            return None
        session_id, separator, _ = raw.partition(_SEPARATOR)
        return session_id.decode() if separator and session_id else None


def _keys(settings: Settings) -> list[bytes]:
    return [
        HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO).derive(
            secret.get_secret_value().encode()
        )
        for secret in settings.secret_keys()
    ]


def fleet_request_state_security(
    settings: Settings, *, audience: str, ttl: float = STATE_TTL_SECONDS
) -> RequestStateSecurity:
    """A `RequestStateSecurity` whose keys every replica with the same secret shares.

    Pass it to ``MCPServer(..., request_state_security=...)``. Each of the
    settings' secret keys gives one key of the ring (HKDF-SHA256, its own
    ``info``, so the request-state keys are never the credential keys). The
    state also names the call's session (see the module docstring).

    Args:
        settings: the fleet's settings; ``secret_key`` must be set.
        audience: names the service, so state sealed for one server is refused
            by another sharing the secret.
        ttl: seconds a sealed state stays valid. `mcp_app`'s call sessions idle out
            after the default (`STATE_TTL_SECONDS`): a longer ttl lets a state
            outlive its call session (its next round is then refused as expired).

    Raises:
        ValueError: no secret key is set.

    .. versionadded:: 0.1
    """
    codec = CallSessionCodec.from_settings(settings)
    if codec is None:
        raise ValueError("fleet request state needs SESSIONSTORE_SECRET_KEY (settings.secret_key)")
    return RequestStateSecurity(codec=codec, ttl=ttl, audience=audience)


class CallSessions:
    """The manager's side of call sessions: which one a round names, and opening one.

    Args:
        codec: the codec of the fleet's request-state keys.
        idle_timeout: a call session ends this long after its latest round (the
            request state's lifetime by default).

    .. versionadded:: 0.1
    """

    def __init__(self, codec: CallSessionCodec, *, idle_timeout: timedelta) -> None:
        self._codec = codec
        self._idle_timeout = idle_timeout

    @classmethod
    def from_settings(
        cls, settings: Settings, *, ttl: float = STATE_TTL_SECONDS
    ) -> CallSessions | None:
        """Call sessions under the fleet's secret keys; None without a secret."""
        codec = CallSessionCodec.from_settings(settings)
        return cls(codec, idle_timeout=timedelta(seconds=ttl)) if codec is not None else None

    def session_named(self, body: bytes) -> str | None:
        """The call session the request state in a request `body` names, if any."""
        if b'"requestState"' not in body:
            return None  # a first round, or no call at all: not parsed here
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return None
        params = message.get("params") if isinstance(message, dict) else None
        state = params.get("requestState") if isinstance(params, dict) else None
        return self._codec.session_of(state) if isinstance(state, str) else None

    async def open(self, store: SessionStore, session_id: str) -> None:
        """Create the call session a round drew (one round trip). If Redis refuses, the
        next round's state names an unknown session and is refused as expired."""
        try:
            await store.create(
                session_id=session_id,
                metadata={CALL_METADATA_KEY: True},
                idle_timeout=self._idle_timeout,
            )
        except SessionStoreError:
            logger.warning("a call session could not be opened", exc_info=True)
