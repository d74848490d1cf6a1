"""Provider profiles: retry numbers and connection lifetimes per kind of upstream.

Chosen by name in settings (``SESSIONSTORE_UPSTREAM_PROFILE``). ``stable``,
``unreliable`` and ``icloud`` carry the numbers of the mail client
the upstream layer was built for. ``gmail`` and
``outlook`` carry the limits their providers document where we could find
them; docs/upstream.md lists each source and says which numbers are our own
choice rather than the provider's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import InvalidInput
from ._backoff import BackoffPolicy, Jitter


class ProviderProfile(BaseModel):
    """Retry and connection-lifetime defaults for one kind of upstream.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    name: str
    backoff: BackoffPolicy
    #: How long a server keeps a connection usable (``session_timeout``);
    #: the pool refreshes connections before they reach it.
    session_timeout: timedelta
    #: Simultaneous connections the provider allows per account (None: unknown).
    max_connections_per_account: int | None = Field(default=None, ge=1)
    #: Where the numbers come from (details in docs/upstream.md).
    source: str


def _secs(value: float) -> timedelta:
    return timedelta(seconds=value)


def _profile(
    name: str,
    attempts: int,
    initial: float,
    cap: float,
    session_timeout: float,
    source: str,
    max_connections: int | None = None,
) -> ProviderProfile:
    return ProviderProfile(
        name=name,
        backoff=BackoffPolicy(
            max_attempts=attempts,
            initial_delay=_secs(initial),
            max_delay=_secs(cap),
            jitter=Jitter.FULL,
        ),
        session_timeout=_secs(session_timeout),
        max_connections_per_account=max_connections,
        source=source,
    )


# RFC 3501 section 5.4: an idle server's autologout timer is at least 30 minutes;
# RFC 2177 asks IDLE clients to re-issue IDLE at least every 29 minutes.
_TWENTY_NINE_MINUTES = 29 * 60

PROFILES: Mapping[str, ProviderProfile] = MappingProxyType(
    {
        profile.name: profile
        for profile in (
            _profile("stable", 2, 0.5, 10.0, 3600, "mail client 'For Stable Connections'"),
            _profile("unreliable", 5, 2.0, 60.0, 900, "mail client 'For Unreliable Connections'"),
            _profile("icloud", 3, 1.0, 30.0, 1800, "mail client 'For iCloud (Recommended)'"),
            _profile(
                "gmail",
                4,
                1.0,
                60.0,
                _TWENTY_NINE_MINUTES,
                "Gmail Help 'Too many simultaneous connections' (limit per account); "
                "RFC 3501 5.4 / RFC 2177 for the 29-minute refresh; retry numbers are ours",
                max_connections=15,
            ),
            _profile(
                "outlook",
                4,
                2.0,
                60.0,
                _TWENTY_NINE_MINUTES,
                "Exchange Online throttling FAQ (20 concurrent IMAP connections); Exchange "
                "IMAP4 AuthenticatedConnectionTimeout default 1800 s; retry numbers are ours",
                max_connections=20,
            ),
        )
    }
)


def get_profile(name: str) -> ProviderProfile:
    """The profile called `name`.

    Raises:
        InvalidInput: no such profile; the message lists the known names.

    .. versionadded:: 0.1
    """
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise InvalidInput(f"unknown upstream profile {name!r}; known: {known}") from None
