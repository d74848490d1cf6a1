"""`ServerSettings`: the reference server and its ASGI middleware."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ._types import Duration, EmptyIsNone


class ServerSettings(BaseModel):
    """How the reference server and the session middleware answer.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    #: Bearer token(s) for ``/session-health``, comma-separated (compared in
    #: constant time). Unset or empty: the endpoint refuses every caller with 403.
    health_token: EmptyIsNone[SecretStr] = None
    #: Bearer token(s) of a backend service, comma-separated (several, to rotate
    #: them): create sessions, list a user's sessions, read and steer any session
    #: (docs/security.md). The admin token may do the same.
    service_tokens: EmptyIsNone[SecretStr] = None
    #: Serve the management routes to anonymous callers. Without it the server
    #: refuses to start when neither service nor admin token is set. Dev only.
    insecure_open_management: bool = False
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
    #: Each Redis command made while serving a request may take this long, pool
    #: wait included; a hung Redis then gives every request a 503 (with
    #: Retry-After) within about this long, and the client fails fast after the
    #: first such timeout until Redis answers a PING again.
    request_redis_timeout: Duration = Field(default=timedelta(milliseconds=750), gt=timedelta(0))
    #: ``/session-health`` says "degraded" when the sweeper lags more than a few sweep
    #: periods (`sessionstore.fleet.sweep_lag_limit`), and never later than this.
    health_max_sweeper_lag: Duration = timedelta(minutes=5)
    #: Address ``sessionstore serve`` listens on (``SESSIONSTORE_SERVER_HOST``).
    host: str = "127.0.0.1"
    #: Port ``sessionstore serve`` listens on (``SESSIONSTORE_SERVER_PORT``).
    port: int = Field(default=8000, ge=0, le=65535)
    #: A request body must arrive whole within this (408 otherwise); it is read
    #: before the session's request lease is taken.
    request_body_timeout: Duration = timedelta(seconds=30)
    #: A request's headers must arrive within this, from the connection's opening
    #: or the previous response (408 and the connection closed otherwise).
    request_header_timeout: Duration = timedelta(seconds=10)
    #: An idle keep-alive connection is closed after this (uvicorn's
    #: ``timeout_keep_alive``). Behind a balancer that reuses its connections to the
    #: replicas, set it above the balancer's idle timeout: a request sent on a
    #: connection the replica is closing fails. Idle time also runs against
    #: `request_header_timeout`, so the lower of the two closes an idle connection.
    keep_alive_timeout: Duration = Field(default=timedelta(seconds=5), gt=timedelta(0))
    #: Connections (and running requests) one replica serves at once; beyond it
    #: uvicorn answers 503 (``limit_concurrency``; ``SESSIONSTORE_SERVER_LIMIT_CONCURRENCY``).
    limit_concurrency: int = Field(default=1000, ge=1)
    #: Bearer token(s), comma-separated, of the breaker control endpoints (force
    #: open, force closed, reset) and of upstream administration (registering
    #: credential references), compared in constant time; they may also do what a
    #: service token may. Unset or empty: breaker control refuses every caller with
    #: 403. Kept apart from `health_token`: whoever may read health (a monitor)
    #: must not be able to isolate an upstream.
    admin_token: EmptyIsNone[SecretStr] = None
    #: Load balancers whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` a replica
    #: believes: comma-separated addresses or networks (``10.0.0.5,172.28.0.0/24``).
    #: Empty: none, so a request's client is the address it came from and a header
    #: a client wrote itself is ignored. ``*`` trusts every peer (never in production).
    trusted_proxies: str = ""
    #: Mount ``POST /demo/upstreams/{upstream}/call``: a guarded call to a
    #: simulated upstream (breakers ``demo:<upstream>``) for the dev fleet and
    #: tests. Off by default; never turn it on in production.
    demo_routes: bool = False
