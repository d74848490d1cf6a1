"""Request state that every replica accepts (the 2026-07-28 revision).

On 2026-07-28 there is no session: a tool that needs input answers
``InputRequiredResult`` with an opaque ``requestState``, sealed by the SDK's
`RequestStateSecurity`, and the client retries the call carrying it, to any
replica. The SDK's default key is per process (`RequestStateSecurity.ephemeral`),
so another replica refuses the state. `fleet_request_state_security` derives the
keys from the fleet's secret (``SESSIONSTORE_SECRET_KEY``, newest key first, so
rotation works as it does for credentials), the same on every replica.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mcp.server.request_state import RequestStateSecurity

from .. import Settings

_INFO = b"sessionstore mcp request state v1"


def fleet_request_state_security(
    settings: Settings, *, audience: str, ttl: float = 600.0
) -> RequestStateSecurity:
    """A `RequestStateSecurity` whose keys every replica with the same secret shares.

    Pass it to ``MCPServer(..., request_state_security=...)``. Each of the
    settings' secret keys gives one key of the ring (HKDF-SHA256, its own
    ``info``, so the request-state keys are never the credential keys).

    Args:
        settings: the fleet's settings; ``secret_key`` must be set.
        audience: names the service, so state sealed for one server is refused
            by another sharing the secret.
        ttl: seconds a sealed state stays valid.

    Raises:
        ValueError: no secret key is set.

    .. versionadded:: 0.1
    """
    secrets = settings.secret_keys()
    if not secrets:
        raise ValueError("fleet request state needs SESSIONSTORE_SECRET_KEY (settings.secret_key)")
    keys = [
        HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO).derive(
            secret.get_secret_value().encode()
        )
        for secret in secrets
    ]
    return RequestStateSecurity(keys=keys, ttl=ttl, audience=audience)
