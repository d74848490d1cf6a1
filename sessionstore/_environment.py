"""`Settings`: everything configurable, read from ``SESSIONSTORE_*`` variables.

Built only at the edge (the command line, the server's lifespan,
``workers/settings.py``); it hands out the frozen per-concept settings of
``_settings.py`` and ``fleet/_config.py`` that library code takes as
arguments. Each area's variables sit in their own block below.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._settings import (
    BreakerRedisDownPolicy,
    BreakerSettings,
    Duration,
    RedisSettings,
    SessionSettings,
)
from .exceptions import InvalidInput
from .fleet import WorkerConfig
from .upstream import BackoffPolicy, Jitter, UpstreamSettings, get_profile, reconnect_policy


class Settings(BaseSettings):
    """Everything configurable, read from ``SESSIONSTORE_*`` environment variables.

    Durations accept seconds (``1800``) or ISO 8601 (``PT30M``).

    .. versionadded:: 0.1
    """

    model_config = SettingsConfigDict(env_prefix="SESSIONSTORE_", extra="ignore")

    #: The session store's Redis. Empty: dev and tests start an embedded server.
    redis_url: str | None = None
    #: The job queue's Redis (arq cannot use Redis Cluster). Defaults to
    #: `redis_url` when that is not a cluster URL.
    queue_redis_url: str | None = None
    redis_connect_timeout: Duration = timedelta(seconds=1)
    redis_socket_timeout: Duration = timedelta(seconds=2)

    key_prefix: str = "ss"
    shards: int = 16
    idle_timeout: Duration = timedelta(minutes=30)
    absolute_lifetime: Duration = timedelta(hours=24)
    expired_retention: Duration = timedelta(hours=24)
    sweep_grace: Duration = timedelta(hours=24)
    max_metadata_bytes: int = 16 * 1024
    max_attribute_bytes: int = 64 * 1024
    max_state_bytes: int = 1024 * 1024
    max_attributes: int = 256
    max_requests_per_session: int = 32
    max_requests_global: int = 0
    request_lease_ttl: Duration = timedelta(seconds=60)
    lock_ttl: Duration = timedelta(seconds=30)
    events_maxlen: int = 10_000

    # -- circuit breakers: SESSIONSTORE_BREAKER_* (see BreakerSettings) ---------
    breaker_failure_rate_threshold: float = 0.5
    breaker_minimum_calls: int = 10
    breaker_window: Duration = timedelta(seconds=60)
    breaker_window_buckets: int = 6
    breaker_slow_call_duration: Duration | None = None
    breaker_slow_call_rate_threshold: float = 0.8
    breaker_open_duration: Duration = timedelta(seconds=30)
    breaker_half_open_probes: int = 3
    breaker_probe_lease_ttl: Duration = timedelta(seconds=30)
    breaker_staleness_bound: Duration = timedelta(seconds=1)
    breaker_record_flush_interval: Duration = timedelta(milliseconds=20)
    breaker_redis_down_policy: BreakerRedisDownPolicy = "fail_open"
    breaker_events_maxlen: int = 1000
    breaker_audit_maxlen: int = 100
    breaker_retention: Duration = timedelta(days=7)
    # -- end of circuit breakers ------------------------------------------------

    # -- worker fleet (issue 3: workers/, `sessionstore worker`) ---------------
    # Passed to the frozen `WorkerConfig` by `worker_config()`; see docs/workers.md.
    #: SESSIONSTORE_AGGRESSIVE_CLEANUP=true: shorter sweep period, start-up pass.
    aggressive_cleanup: bool = False
    sweep_interval: Duration = timedelta(minutes=1)
    aggressive_sweep_interval: Duration = timedelta(seconds=10)
    sweep_batch_size: int = 500
    sweep_max_per_run: int = 50_000
    long_overdue_after: Duration = timedelta(hours=1)
    repair_interval: Duration = timedelta(hours=1)
    heartbeat_interval: Duration = timedelta(seconds=10)
    heartbeat_ttl: Duration = timedelta(hours=1)
    worker_dead_after: Duration = timedelta(seconds=30)
    job_timeout: Duration = timedelta(seconds=30)
    worker_id: str | None = None
    queue_name: str | None = None

    # -- served fleet (issue 5): reference server, ASGI middleware, health -------
    #: Bearer token for ``/session-health`` (compared in constant time). Unset:
    #: the endpoint refuses every caller with 403.
    health_token: SecretStr | None = None
    #: Request header that carries the session id (MCP Streamable HTTP's name).
    session_header: str = Field(default="Mcp-Session-Id", pattern=r"^[A-Za-z0-9-]{1,64}$")
    #: Cookie that carries the signed session id (only with `cookie_secret`).
    session_cookie: str = Field(default="sessionstore", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: Signs the session-id cookie (itsdangerous). Unset: cookies are ignored.
    cookie_secret: SecretStr | None = None
    #: A request with an expired id gets a successor session (``store.resume``)
    #: whose id comes back in the session header, instead of a 410.
    renew_expired_sessions: bool = False
    #: Larger request bodies are refused with 413 before they are read whole.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    #: On shutdown, in-flight requests get this long to finish; then their
    #: request leases are returned anyway.
    drain_timeout: Duration = timedelta(seconds=10)
    #: ``/session-health`` says "degraded" when the sweeper lags more than this.
    health_max_sweeper_lag: Duration = timedelta(minutes=5)
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=8000, ge=0, le=65535)
    # -- served fleet: slow and abusive clients (docs/security.md) ---------------
    #: A request body must arrive whole within this (408 otherwise); it is read
    #: before the session's request lease is taken.
    request_body_timeout: Duration = timedelta(seconds=30)
    #: A request's headers must arrive within this, from the connection's opening
    #: or the previous response (408 and the connection closed otherwise).
    request_header_timeout: Duration = timedelta(seconds=10)
    #: Connections (and running requests) one replica serves at once; beyond it
    #: uvicorn answers 503 (``limit_concurrency``).
    server_limit_concurrency: int = Field(default=1000, ge=1)
    # -- served fleet: breaker endpoints (docs/server.md, "Circuit breakers") ---
    #: Bearer token of the breaker control endpoints (force open, force closed,
    #: reset) and of upstream administration (registering credential references),
    #: compared in constant time. Unset: they refuse every caller with
    #: 403. Kept apart from `health_token`: whoever may read health (a monitor)
    #: must not be able to isolate an upstream.
    admin_token: SecretStr | None = None
    #: Mount ``POST /demo/upstreams/{upstream}/call``: a guarded call to a
    #: simulated upstream (breakers ``demo:<upstream>``) for the dev fleet and
    #: tests. Off by default; never turn it on in production.
    demo_routes: bool = False
    # -- served fleet: upstream endpoints (docs/server.md, "Upstream connections") --
    #: Hosts that ``PUT /sessions/{id}/upstreams/{name}`` may register: comma-separated
    #: names or shell patterns (``imap.gmail.com,*.mail.me.com``), case-insensitive.
    #: Unset: any host. Set it wherever session clients register their own
    #: upstreams: the replicas and workers connect wherever a registration points.
    upstream_allowed_hosts: str | None = None

    # -- upstream connections: retry, pool, IMAP, credentials --
    #: Provider profile: stable, unreliable, icloud, gmail or outlook.
    upstream_profile: str = "stable"
    #: Overrides of the profile's numbers (unset: the profile's own).
    upstream_max_attempts: int | None = None
    upstream_initial_delay: Duration | None = None
    upstream_max_delay: Duration | None = None
    upstream_jitter: Jitter | None = None
    upstream_max_connection_age: Duration | None = None
    upstream_call_timeout: Duration = timedelta(seconds=10)
    upstream_connect_timeout: Duration = timedelta(seconds=10)
    upstream_probe_idle_after: Duration = timedelta(seconds=60)
    upstream_record_interval: Duration = timedelta(seconds=30)
    upstream_reconnect_max_attempts: int = 10
    upstream_reconnect_max_delay: Duration = timedelta(minutes=5)
    #: Directory of ``file:<name>`` credential references (Docker/Kubernetes secrets).
    upstream_credentials_dir: str | None = None
    #: Fernet keys that encrypt upstream credentials in Redis: comma-separated,
    #: newest first; older keys still decrypt (key rotation).
    secret_key: SecretStr | None = None

    @field_validator("redis_url", "queue_redis_url", "worker_id", "queue_name", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("upstream_allowed_hosts", mode="before")
    @classmethod
    def _empty_allow_list_is_off(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_off(cls, value: object) -> object:
        # ``SESSIONSTORE_ADMIN_TOKEN=`` (compose passes it through empty) means off (403).
        return None if value == "" else value

    @field_validator("breaker_slow_call_duration", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if value == "" else value

    def breaker_settings(self) -> BreakerSettings:
        """The circuit breaker part of these settings (the ``breaker_`` fields).

        Raises:
            pydantic.ValidationError: a value is out of range (names the field).
        """
        fields = {
            name: getattr(self, f"breaker_{name}")
            for name in BreakerSettings.model_fields
            if f"breaker_{name}" in type(self).model_fields
        }
        return BreakerSettings(**fields)

    def session_settings(self) -> SessionSettings:
        """The session behaviour part of these settings."""
        names = SessionSettings.model_fields.keys() & type(self).model_fields.keys()
        return SessionSettings(**{name: getattr(self, name) for name in names})

    def worker_config(self) -> WorkerConfig:
        """The worker fleet part of these settings.

        Raises:
            pydantic.ValidationError: a worker setting is out of range.
        """
        names = WorkerConfig.model_fields.keys() & type(self).model_fields.keys()
        return WorkerConfig(**{name: getattr(self, name) for name in names})

    @field_validator(
        "upstream_max_attempts",
        "upstream_initial_delay",
        "upstream_max_delay",
        "upstream_jitter",
        "upstream_max_connection_age",
        "upstream_credentials_dir",
        "secret_key",
        mode="before",
    )
    @classmethod
    def _empty_upstream_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("upstream_profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        return get_profile(value).name

    def upstream_settings(self) -> UpstreamSettings:
        """The upstream part of these settings: the profile with any overrides.

        Raises:
            InvalidInput: unknown profile name.
        """
        profile = get_profile(self.upstream_profile)
        backoff_overrides = {
            "max_attempts": self.upstream_max_attempts,
            "initial_delay": self.upstream_initial_delay,
            "max_delay": self.upstream_max_delay,
            "jitter": self.upstream_jitter,
        }
        backoff = profile.backoff.model_copy(
            update={k: v for k, v in backoff_overrides.items() if v is not None}
        )
        backoff = BackoffPolicy.model_validate(backoff.model_dump())
        return UpstreamSettings.for_profile(
            profile.name,
            backoff=backoff,
            reconnect_backoff=reconnect_policy(
                backoff,
                attempts=self.upstream_reconnect_max_attempts,
                max_delay=self.upstream_reconnect_max_delay,
            ),
            call_timeout=self.upstream_call_timeout,
            connect_timeout=self.upstream_connect_timeout,
            max_connection_age=self.upstream_max_connection_age or profile.session_timeout,
            probe_idle_after=self.upstream_probe_idle_after,
            record_interval=self.upstream_record_interval,
        )

    def secret_keys(self) -> tuple[SecretStr, ...]:
        """The credential encryption keys from `secret_key`, newest first (may be empty)."""
        if self.secret_key is None:
            return ()
        parts = self.secret_key.get_secret_value().split(",")
        return tuple(SecretStr(part.strip()) for part in parts if part.strip())

    def store_redis(self, url: str) -> RedisSettings:
        """`RedisSettings` for the session store at `url` with these timeouts."""
        return RedisSettings.from_dsn(
            url,
            connect_timeout=self.redis_connect_timeout,
            socket_timeout=self.redis_socket_timeout,
        )

    def queue_redis(self, store_url: str) -> RedisSettings:
        """`RedisSettings` for the arq job queue.

        Raises:
            InvalidInput: the store is on a cluster and no queue URL is set.
        """
        url = self.queue_redis_url
        if url is None:
            if RedisSettings.from_dsn(store_url).mode == "cluster":
                raise InvalidInput(
                    "the store is on Redis Cluster, which arq cannot use: "
                    "set SESSIONSTORE_QUEUE_REDIS_URL to a standalone or Sentinel Redis"
                )
            url = store_url
        return self.store_redis(url)
