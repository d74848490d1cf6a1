"""Frozen settings objects, one per concept, that library code takes as arguments.

`RedisSettings`, `SessionSettings`, `BreakerSettings` and `UpstreamSettings`
(and `WorkerConfig` in ``fleet/_config.py``) are built once at the edge, by
`sessionstore._environment.Settings` from ``SESSIONSTORE_*`` variables or by a
caller directly, and passed down. Library code never reads ``os.environ``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from .exceptions import InvalidInput

RedisMode = Literal["standalone", "sentinel", "cluster"]


def _seconds_text(value: object) -> object:
    """Environment variables arrive as text: read "90" or "1.5" as seconds."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # ISO 8601 ("PT30M") and pydantic's own forms
    return value


#: A duration setting: seconds ("1800", "0.25") or ISO 8601 ("PT30M").
Duration = Annotated[timedelta, BeforeValidator(_seconds_text)]

_SCHEMES: dict[str, RedisMode] = {
    "redis": "standalone",
    "rediss": "standalone",
    "unix": "standalone",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
}


class RedisSettings(BaseModel):
    """Where a Redis is and how long to wait for it.

    Build it with `RedisSettings.from_dsn`. Accepted forms::

        redis://[user:password@]host:port/db        standalone
        rediss://...                                 standalone over TLS
        unix:///path/to/redis.sock?db=0              standalone over a socket
        redis+sentinel://[user:pw@]h1:p1,h2:p2/mymaster?db=0
        redis+cluster://[user:pw@]h1:p1,h2:p2        Redis Cluster

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    mode: RedisMode = "standalone"
    hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", 6379),)
    unix_socket_path: str | None = None
    database: int = 0
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    sentinel_master: str = "mymaster"
    #: Connecting must fail fast when Redis is down (guarantee 11).
    connect_timeout: timedelta = timedelta(seconds=1)
    #: A command that gets no answer in this time fails with a backend error.
    socket_timeout: timedelta = timedelta(seconds=2)
    max_connections: int = 64

    @classmethod
    def from_dsn(cls, dsn: str, **overrides: object) -> RedisSettings:
        """Parse a Redis URL into settings; see the class docstring for the forms.

        Raises:
            InvalidInput: the URL has an unknown scheme or a bad host list.
        """
        url = urlparse(dsn)
        mode = _SCHEMES.get(url.scheme)
        if mode is None:
            raise InvalidInput(f"unsupported Redis URL scheme {url.scheme!r}")
        query = parse_qs(url.query)
        database = int(query["db"][0]) if "db" in query else 0
        fields: dict[str, object] = {
            "mode": mode,
            "tls": url.scheme.startswith("rediss"),
            "username": unquote(url.username) if url.username else None,
            "password": SecretStr(unquote(url.password)) if url.password else None,
        }
        if url.scheme == "unix":
            fields["unix_socket_path"] = url.path
        else:
            fields["hosts"] = _parse_hosts(url.netloc.rpartition("@")[2])
            path = url.path.strip("/")
            if mode == "sentinel":
                fields["sentinel_master"] = path or "mymaster"
            elif path:
                database = int(path)
        fields["database"] = database
        fields.update(overrides)
        return cls.model_validate(fields)

    def to_dsn(self) -> str:
        """The URL form of these settings, with the password masked.

        .. versionadded:: 0.1
        """
        scheme = {"standalone": "redis", "sentinel": "redis+sentinel", "cluster": "redis+cluster"}[
            self.mode
        ]
        if self.tls:
            scheme = scheme.replace("redis", "rediss", 1)
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        if self.unix_socket_path:
            return f"unix://{auth}{self.unix_socket_path}?db={self.database}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        tail = self.sentinel_master if self.mode == "sentinel" else str(self.database)
        return f"{scheme}://{auth}{hosts}/{tail}"


def _parse_hosts(netloc: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host:
            host, port = part, "6379"
        if not port.isdigit():
            raise InvalidInput(f"bad port in Redis URL host {part!r}")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port)))
    return tuple(hosts)


class SessionSettings(BaseModel):
    """How sessions behave: lifetimes, limits and the key space.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Every key the store writes starts with this prefix and a colon.
    key_prefix: str = Field(default="ss", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    #: Number of expiry-index shards. Session ids carry their shard, so this may
    #: grow in a running deployment but must never shrink.
    shards: int = Field(default=16, ge=1, le=1024)
    #: A session with no activity for this long expires.
    idle_timeout: timedelta = timedelta(minutes=30)
    #: A session expires this long after creation, however active.
    absolute_lifetime: timedelta = timedelta(hours=24)
    #: Tombstones of expired, closed and rotated ids answer for this long.
    expired_retention: timedelta = timedelta(hours=24)
    #: An overdue session's record is kept this long for the sweeper to expire it
    #: (and emit its event) after worker downtime; Redis drops it after that.
    sweep_grace: timedelta = timedelta(hours=24)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    max_attribute_bytes: int = Field(default=64 * 1024, ge=2)
    max_state_bytes: int = Field(default=1024 * 1024, ge=2)
    max_attributes: int = Field(default=256, ge=1)
    #: Concurrent requests per session across the fleet (0 = unlimited).
    max_requests_per_session: int = Field(default=32, ge=0)
    #: Concurrent requests across the whole fleet (0 = unlimited).
    max_requests_global: int = Field(default=0, ge=0)
    #: A request lease lapses after this long unless renewed; a crashed
    #: replica's leases are reclaimed after it.
    request_lease_ttl: timedelta = timedelta(seconds=60)
    lock_ttl: timedelta = timedelta(seconds=30)
    #: Approximate bound on each shard's event stream.
    events_maxlen: int = Field(default=10_000, ge=10)
    #: Compare-and-set attempts `mutate` makes before giving up.
    mutate_max_attempts: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _check_durations(self) -> SessionSettings:
        for name in (
            "idle_timeout",
            "absolute_lifetime",
            "expired_retention",
            "sweep_grace",
            "request_lease_ttl",
            "lock_ttl",
        ):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self


# -- circuit breakers (sessionstore.breaker) ----------------------------------

BreakerRedisDownPolicy = Literal["fail_open", "fail_closed"]


class BreakerSettings(BaseModel):
    """How the fleet-shared circuit breakers judge an upstream (see docs/breaker.md).

    Every replica must use the same values: the Lua scripts take them as
    arguments and judge the shared window by the caller's rule.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Trip when failures / calls in the window reaches this.
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    #: No judgement before this many calls in the window.
    minimum_calls: int = Field(default=10, ge=1)
    #: Length of the sliding window, split into `window_buckets` time buckets.
    window: timedelta = timedelta(seconds=60)
    window_buckets: int = Field(default=6, ge=1, le=60)
    #: A call at least this long counts as slow; None turns slow-call judgement off.
    slow_call_duration: timedelta | None = None
    #: Trip when slow / calls reaches this (only with `slow_call_duration`).
    slow_call_rate_threshold: float = Field(default=0.8, gt=0, le=1)
    #: How long an open breaker refuses calls before it moves to half-open.
    open_duration: timedelta = timedelta(seconds=30)
    #: Probes the whole fleet admits in half-open; that many successes close it.
    half_open_probes: int = Field(default=3, ge=1, le=1000)
    #: A probe's lease deadline: a dead prober's slot is reclaimed after it.
    probe_lease_ttl: timedelta = timedelta(seconds=30)
    #: A replica's local view is at most this old while Redis is reachable
    #: (it polls every half of it when no push or reply confirmed the state).
    staleness_bound: timedelta = timedelta(seconds=1)
    #: Outcomes are batched for this long; zero records each one inline.
    record_flush_interval: timedelta = timedelta(milliseconds=20)
    #: What guarded calls do while Redis is unreachable.
    redis_down_policy: BreakerRedisDownPolicy = "fail_open"
    #: Approximate cap of each breaker's event stream.
    events_maxlen: int = Field(default=1000, ge=10)
    #: Exact cap of each breaker's audit stream (manual actions).
    audit_maxlen: int = Field(default=100, ge=1)
    #: A breaker's keys live this long after the last process stopped using it.
    retention: timedelta = timedelta(days=7)

    @model_validator(mode="after")
    def _check_durations(self) -> BreakerSettings:
        for name in ("window", "open_duration", "probe_lease_ttl", "staleness_bound", "retention"):
            if getattr(self, name) < timedelta(milliseconds=1):
                raise ValueError(f"{name} must be at least 1 ms")
        if self.window < timedelta(milliseconds=self.window_buckets):
            raise ValueError("window must be at least 1 ms per bucket")
        if self.slow_call_duration is not None and self.slow_call_duration <= timedelta(0):
            raise ValueError("slow_call_duration must be positive (or unset)")
        if self.record_flush_interval < timedelta(0):
            raise ValueError("record_flush_interval must not be negative")
        return self
