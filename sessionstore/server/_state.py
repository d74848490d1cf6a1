"""What the lifespan yields: the server's resources, reached through the request state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .._environment import Settings
from .._health import HealthSection, HealthSources
from .._redis import RedisClient
from ..asgi import InFlightRequests
from ..breaker import BreakerRegistry
from ..fleet import sweep_lag_limit
from ..store import SessionStore

if TYPE_CHECKING:
    from ._auth import AccessTokens
    from ._metrics import ServerMetrics
    from ._upstreams import ServerUpstreams

#: Key of `ServerState` in the lifespan state.
STATE_KEY = "sessionstore"


@dataclass
class ServerState:
    """One replica's resources, built by the lifespan and closed by it.

    .. versionadded:: 0.1
    """

    settings: Settings
    redis: RedisClient
    store: SessionStore
    metrics: ServerMetrics
    inflight: InFlightRequests
    #: This replica's circuit breakers (opened and closed by the lifespan).
    breakers: BreakerRegistry
    #: This replica's upstream pool and reconnect-job queue (opened and closed by the lifespan).
    upstreams: ServerUpstreams
    #: Digests of the bearer tokens by role (`settings` keeps none of them).
    access: AccessTokens
    #: The sections of ``/session-health``, one per concern.
    health_checks: list[HealthCheck] = field(default_factory=list)

    def health_sources(self) -> HealthSources:
        """What the store's health sections read, with this replica's thresholds."""
        return HealthSources(
            store=self.store,
            breakers=self.breakers.admin,
            max_sweeper_lag=sweep_lag_limit(
                self.settings.worker.active_sweep_interval,
                self.settings.server.health_max_sweeper_lag,
            ),
            worker_dead_after=self.settings.worker.worker_dead_after,
            observe_ping=self.metrics.redis_latency.observe,
        )


#: A health check: reads what it needs from the server state.
HealthCheck = Callable[[ServerState], Awaitable[HealthSection]]


async def server_state(request: Request) -> ServerState:
    """The `ServerState` of the app serving `request` (async: FastAPI would run a plain
    function in a worker thread, on every request)."""
    state = getattr(request.state, STATE_KEY, None)
    if not isinstance(state, ServerState):
        raise RuntimeError("the sessionstore lifespan did not run")
    return state


#: FastAPI dependency: this replica's `ServerState`.
State = Annotated[ServerState, Depends(server_state)]
