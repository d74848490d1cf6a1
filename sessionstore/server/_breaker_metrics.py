"""Prometheus metrics of the circuit breakers.

Two kinds, named so they cannot be mistaken for each other:

- fleet-wide, read from Redis at scrape time (every replica reports the same
  value; aggregate with ``max``): each breaker's state, its trips, its window.
  Bounded: the breaker index holds only names used within the retention period;
- per process: the transitions this replica's local views observed
  (``..._observed_total``: a replica counts only the breakers it holds, and
  several replicas count the same transition), whether its breakers reach
  Redis, and the outcomes it had to drop.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..breaker import BreakerHealth, BreakerSnapshot, BreakerState, BreakerStatus


class BreakerMetrics(Collector):
    """The breaker metrics of one app (registered in its `CollectorRegistry`).

    .. versionadded:: 0.1
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "sessionstore_breaker_transitions_observed",
            "Breaker state changes this replica's local views observed, by the state changed "
            "to (per process: only breakers this replica holds; replicas count the same "
            "transition each)",
            ["breaker", "to"],
            registry=registry,
        )
        #: Every known breaker, read from Redis by the last scrape (None: Redis unreachable).
        self.statuses: list[BreakerStatus] | None = None
        #: This replica's registry at the last scrape.
        self.health: BreakerHealth | None = None
        registry.register(self)

    def observed(self, name: str, old: BreakerSnapshot, new: BreakerSnapshot) -> None:
        """`BreakerRegistry.on_transition` callback: count a change of a local view."""
        self.transitions.labels(name, new.state.value).inc()

    def collect(self) -> Iterator[Metric]:
        health = self.health
        if health is not None:
            yield GaugeMetricFamily(
                "sessionstore_breaker_redis_reachable",
                "1 while this replica's breakers reach Redis (else the Redis-down policy applies)",
                value=int(health.redis_reachable),
            )
            yield CounterMetricFamily(
                "sessionstore_breaker_outcomes_dropped",
                "Guarded-call outcomes this replica could not record (Redis unreachable)",
                value=health.outcomes_dropped,
            )
        if self.statuses is not None:
            yield from _fleet(self.statuses)


def _fleet(statuses: list[BreakerStatus]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "sessionstore_breaker_state",
        "1 for the state each breaker is in, 0 for the others (fleet-wide, from Redis)",
        labels=["breaker", "state"],
    )
    trips = CounterMetricFamily(
        "sessionstore_breaker_trips",
        "Automatic openings of each breaker over its life (fleet-wide, from Redis)",
        labels=["breaker"],
    )
    window = GaugeMetricFamily(
        "sessionstore_breaker_window_calls",
        "Calls in each breaker's sliding window, all / failed / slow (fleet-wide, from Redis)",
        labels=["breaker", "kind"],
    )
    for status in sorted(statuses, key=lambda s: s.name):
        for candidate in BreakerState:
            state.add_metric([status.name, candidate.value], int(candidate is status.state))
        trips.add_metric([status.name], status.trips)
        window.add_metric([status.name, "all"], status.calls)
        window.add_metric([status.name, "failed"], status.failures)
        window.add_metric([status.name, "slow"], status.slow)
    yield state
    yield trips
    yield window
