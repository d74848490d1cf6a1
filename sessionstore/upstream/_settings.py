"""`UpstreamSettings`: how upstream connections are retried, timed out and refreshed.

Frozen, built at the edge (`Settings.upstream_settings()` or
`UpstreamSettings.for_profile`) and passed to the pool and the reconnect jobs.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._backoff import BackoffPolicy, Jitter
from ._profiles import PROFILES, ProviderProfile, get_profile


def reconnect_policy(
    backoff: BackoffPolicy, *, attempts: int = 10, max_delay: timedelta = timedelta(minutes=5)
) -> BackoffPolicy:
    """The reconnect jobs' policy: the operation's start, more attempts, a longer cap."""
    return BackoffPolicy(
        max_attempts=attempts,
        initial_delay=backoff.initial_delay,
        max_delay=max(backoff.max_delay, max_delay),
        jitter=Jitter.DECORRELATED,
    )


class UpstreamSettings(BaseModel):
    """How upstream connections (IMAP...) are retried, timed out and refreshed.

    Build it with `Settings.upstream_settings()` or `UpstreamSettings.for_profile`.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    profile: ProviderProfile = PROFILES["stable"]
    #: Attempts and waits of one operation (in the calling process).
    backoff: BackoffPolicy = PROFILES["stable"].backoff
    #: Spacing and count of the reconnect jobs once an operation gave up.
    reconnect_backoff: BackoffPolicy = reconnect_policy(PROFILES["stable"].backoff)
    #: Every single upstream call (each IMAP command) must answer within this.
    call_timeout: timedelta = timedelta(seconds=10)
    #: Connecting, greeting and login together must finish within this.
    connect_timeout: timedelta = timedelta(seconds=10)
    #: Connections are refreshed before this age (the provider drops older ones).
    max_connection_age: timedelta = PROFILES["stable"].session_timeout
    #: ... this long before it, so that a refresh never races the server's drop.
    refresh_margin: timedelta = timedelta(seconds=60)
    #: A connection idle for longer is probed (NOOP) before it is used.
    probe_idle_after: timedelta = timedelta(seconds=60)
    #: Successes are written to the connection's Redis record at most this often.
    record_interval: timedelta = timedelta(seconds=30)
    #: Upstream records per session (each is a field of one hash).
    max_upstreams_per_session: int = Field(default=16, ge=1, le=256)

    @model_validator(mode="after")
    def _check_durations(self) -> UpstreamSettings:
        for name in ("call_timeout", "connect_timeout", "max_connection_age"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self

    @classmethod
    def for_profile(cls, name: str, **overrides: object) -> UpstreamSettings:
        """Settings with the numbers of profile `name`, then `overrides`.

        Raises:
            InvalidInput: unknown profile name.
        """
        profile = get_profile(name)
        fields: dict[str, object] = {
            "profile": profile,
            "backoff": profile.backoff,
            "reconnect_backoff": reconnect_policy(profile.backoff),
            "max_connection_age": profile.session_timeout,
        }
        fields.update(overrides)
        return cls.model_validate(fields)

    @property
    def refresh_after(self) -> timedelta:
        """The age at which the pool replaces a connection."""
        return max(self.max_connection_age - self.refresh_margin, self.max_connection_age / 2)
