"""`UpstreamSettings`: how upstream connections are retried, timed out and refreshed.

Frozen, read as `Settings().upstream` (``SESSIONSTORE_UPSTREAM_*``) or built with
`UpstreamSettings.for_profile`, and passed to the pool and the reconnect jobs.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..settings import Duration, EmptyIsNone
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


class ProfileOverrides(BaseModel):
    """Numbers that replace a provider profile's own (None: the profile's).

    Read from ``SESSIONSTORE_UPSTREAM_*`` with the rest of `UpstreamSettings`,
    which applies them to its `backoff`, `reconnect_backoff` and
    `max_connection_age` when those are not given outright.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    max_attempts: EmptyIsNone[int] = None
    initial_delay: EmptyIsNone[Duration] = None
    max_delay: EmptyIsNone[Duration] = None
    jitter: EmptyIsNone[Jitter] = None
    #: Connections are refreshed before this age (None: the profile's session timeout).
    max_connection_age: EmptyIsNone[Duration] = None
    #: Reconnect jobs per connection once an operation gave up.
    reconnect_max_attempts: int = 10
    #: Longest wait between reconnect jobs.
    reconnect_max_delay: Duration = timedelta(minutes=5)

    def backoff(self, profile: ProviderProfile) -> BackoffPolicy:
        """`profile`'s policy for one operation with these overrides."""
        changes = {
            "max_attempts": self.max_attempts,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }
        fields = profile.backoff.model_dump() | {k: v for k, v in changes.items() if v is not None}
        return BackoffPolicy.model_validate(fields)


class UpstreamSettings(BaseModel):
    """How upstream connections (IMAP...) are retried, timed out and refreshed.

    Give a provider profile (by name or object) and, optionally, the
    `ProfileOverrides` fields (``max_attempts=3``...); `backoff`,
    `reconnect_backoff` and `max_connection_age` follow from them unless given
    outright. `UpstreamSettings.for_profile` does the same by name.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Provider profile: stable, unreliable, icloud, gmail or outlook (or the object).
    profile: ProviderProfile = PROFILES["stable"]
    #: Attempts and waits of one operation (in the calling process).
    backoff: BackoffPolicy = PROFILES["stable"].backoff
    #: Spacing and count of the reconnect jobs once an operation gave up.
    reconnect_backoff: BackoffPolicy = reconnect_policy(PROFILES["stable"].backoff)
    #: Every single upstream call (each IMAP command) must answer within this.
    call_timeout: Duration = timedelta(seconds=10)
    #: Connecting, greeting and login together must finish within this.
    connect_timeout: Duration = timedelta(seconds=10)
    #: Connections are refreshed before this age (the provider drops older ones).
    max_connection_age: Duration = PROFILES["stable"].session_timeout
    #: ... this long before it, so that a refresh never races the server's drop.
    refresh_margin: Duration = timedelta(seconds=60)
    #: A connection idle for longer is probed (NOOP) before it is used.
    probe_idle_after: Duration = timedelta(seconds=60)
    #: Successes are written to the connection's Redis record at most this often.
    record_interval: Duration = timedelta(seconds=30)
    #: Upstream records per session (each is a field of one hash).
    max_upstreams_per_session: int = Field(default=16, ge=1, le=256)
    #: Hosts that ``PUT /sessions/{id}/upstreams/{name}`` may register: comma-separated
    #: names or shell patterns (``imap.gmail.com,*.mail.me.com``), case-insensitive.
    #: Unset: any host. Set it wherever session clients register their own
    #: upstreams: the replicas and workers connect wherever a registration points.
    allowed_hosts: EmptyIsNone[str] = None
    #: Commands a stdio MCP upstream registered over REST may run (admin token only):
    #: comma-separated, each compared with the body's ``command`` exactly. Unset: none
    #: (a registration over REST would run a program on every replica and worker).
    allowed_commands: EmptyIsNone[str] = None
    #: Directory of ``file:<name>`` credential references (Docker/Kubernetes secrets).
    credentials_dir: EmptyIsNone[str] = None

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: object) -> object:
        """Resolve a profile name and derive what the profile and overrides decide."""
        if not isinstance(data, dict):
            return data
        fields = {k: v for k, v in data.items() if k not in ProfileOverrides.model_fields}
        overrides = ProfileOverrides.model_validate(
            {k: v for k, v in data.items() if k in ProfileOverrides.model_fields}
        )
        profile = fields.get("profile", PROFILES["stable"])
        if isinstance(profile, str):
            profile = fields["profile"] = get_profile(profile)
        if isinstance(profile, ProviderProfile):
            backoff = overrides.backoff(profile)
            fields.setdefault("backoff", backoff)
            fields.setdefault(
                "reconnect_backoff",
                reconnect_policy(
                    backoff,
                    attempts=overrides.reconnect_max_attempts,
                    max_delay=overrides.reconnect_max_delay,
                ),
            )
            fields.setdefault(
                "max_connection_age", overrides.max_connection_age or profile.session_timeout
            )
        return fields

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
        get_profile(name)  # an unknown name raises InvalidInput, not a validation error
        return cls.model_validate({"profile": name, **overrides})

    @property
    def refresh_after(self) -> timedelta:
        """The age at which the pool replaces a connection."""
        return max(self.max_connection_age - self.refresh_margin, self.max_connection_age / 2)
