"""Prometheus metrics of one replica, plus fleet-wide figures read from Redis.

Per-process counters are right for what this process did (HTTP requests, its
in-flight request leases, its Redis round trips). Session figures are not:
sessions are created on one replica and expired by a worker, so a
per-process counter would only ever see a slice. Those come from Redis at
scrape time (`SessionStore.counts`, O(shards)) through `FleetCollector`;
every replica reports the same fleet-wide value, so aggregate them with
``max`` rather than ``sum`` in PromQL.

Each app has its own `CollectorRegistry` (no process-global registry), so
several apps in one process, as in tests, do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..fleet import WorkerState
from ..store import SessionCounts
from ._breaker_metrics import BreakerMetrics
from ._upstream_metrics import UpstreamMetrics

#: Methods counted by name; anything else is counted as "other" (bounded labels).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class FleetCollector(Collector):
    """Fleet-wide session figures from the last `refresh` (done per scrape).

    .. versionadded:: 0.1
    """

    def __init__(
        self, in_flight: Callable[[], int], bodies_reading: Callable[[], int] = lambda: 0
    ) -> None:
        self._in_flight = in_flight
        self._bodies_reading = bodies_reading
        self.counts: SessionCounts | None = None
        self.global_leases: int | None = None
        #: Workers by heartbeat state (fleet-wide, from Redis).
        self.workers: dict[WorkerState, int] = {}
        self.redis_up = False

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "sessionstore_redis_up", "1 if the last scrape reached Redis", value=int(self.redis_up)
        )
        yield GaugeMetricFamily(
            "sessionstore_request_leases_in_flight",
            "Request leases this replica holds now",
            value=self._in_flight(),
        )
        yield GaugeMetricFamily(
            "sessionstore_request_bodies_reading",
            "Requests on this replica whose body is still arriving (no lease held yet)",
            value=self._bodies_reading(),
        )
        counts = self.counts
        if counts is None or not self.redis_up:
            return
        yield GaugeMetricFamily(
            "sessionstore_sessions_active",
            "Sessions whose deadlines are ahead (fleet-wide)",
            value=counts.active,
        )
        yield GaugeMetricFamily(
            "sessionstore_sessions_overdue",
            "Sessions past a deadline, not yet expired by the sweeper (fleet-wide)",
            value=counts.overdue,
        )
        yield GaugeMetricFamily(
            "sessionstore_sweeper_lag_seconds",
            "How long the oldest overdue session has waited for the sweeper",
            value=counts.sweeper_lag.total_seconds(),
        )
        transitions = CounterMetricFamily(
            "sessionstore_session_transitions",
            "Session lifecycle transitions since the store began (fleet-wide, from Redis)",
            labels=["transition"],
        )
        for name, value in sorted(counts.totals.items()):
            transitions.add_metric([name], value)
        yield transitions
        workers = GaugeMetricFamily(
            "sessionstore_workers",
            "Workers by their heartbeats: live, dead (silent too long), stopped (fleet-wide)",
            labels=["state"],
        )
        for state in WorkerState:
            workers.add_metric([state.value], self.workers.get(state, 0))
        yield workers
        if self.global_leases is not None:
            yield GaugeMetricFamily(
                "sessionstore_request_leases_global",
                "Live request leases across the fleet (with a global limit set)",
                value=self.global_leases,
            )


class ServerMetrics:
    """The metrics of one app, in its own registry.

    .. versionadded:: 0.1
    """

    def __init__(
        self, in_flight: Callable[[], int], bodies_reading: Callable[[], int] = lambda: 0
    ) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "sessionstore_http_requests",
            "HTTP requests this replica answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "sessionstore_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=self.registry,
        )
        self.redis_latency = Histogram(
            "sessionstore_redis_latency_seconds",
            "Round trip of a Redis PING from this replica (health checks and scrapes)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.fleet = FleetCollector(in_flight, bodies_reading)
        self.registry.register(self.fleet)
        self.breakers = BreakerMetrics(self.registry)
        self.upstreams = UpstreamMetrics(self.registry)

    def render(self) -> bytes:
        """The text exposition format of everything registered."""
        return generate_latest(self.registry)


class RequestMetrics:
    """Plain ASGI middleware counting requests by method, route template and status.

    The route is the matched path template (``/sessions/{session_id}``), never
    the raw path, so ids do not blow up the label cardinality.

    .. versionadded:: 0.1
    """

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "<unmatched>")
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_seconds.labels(method, route).observe(time.perf_counter() - started)
