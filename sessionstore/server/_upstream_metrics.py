"""Prometheus metrics of the upstream connections.

Two kinds, named so they cannot be mistaken for each other:

- fleet-wide, read from Redis at scrape time (every replica reports the same
  value; aggregate with ``max``): reconnect attempts, changes of state,
  registrations. The record script counts them in each shard's stats hash as
  it writes the records, whichever replica or worker wrote
  (`sessionstore.upstream.read_upstream_totals`, O(shards) per scrape);
- per process (``..._pool_...``): the connections this replica's pool tracks,
  by their record's state as last seen here, and its open sockets. A fleet-wide
  gauge of connections by state would need a census of every session's
  records (they leave with their sessions, uncounted), so there is none: sum
  the per-process gauges for sockets, and read one session's records with
  ``GET /sessions/{id}/upstreams``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..upstream import PoolCensus, UpstreamTotals


class UpstreamMetrics(Collector):
    """The upstream metrics of one app (registered in its `CollectorRegistry`).

    .. versionadded:: 0.1
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Fleet-wide counters from the last scrape (None: Redis unreachable).
        self.totals: UpstreamTotals | None = None
        #: This replica's pool at the last scrape.
        self.census: PoolCensus | None = None
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        census = self.census
        if census is not None:
            yield GaugeMetricFamily(
                "sessionstore_upstream_pool_sockets_open",
                "Upstream sockets (IMAP connections) open in this replica (per process)",
                value=census.open_connections,
            )
            tracked = GaugeMetricFamily(
                "sessionstore_upstream_pool_connections",
                "Upstream connections this replica's pool tracks, by their record's state as "
                "last seen here (per process; 'unknown' before the first read)",
                labels=["state"],
            )
            for state, count in sorted(census.by_state.items()):
                tracked.add_metric([state], count)
            yield tracked
        if self.totals is not None:
            yield from _fleet(self.totals)


def _fleet(totals: UpstreamTotals) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "sessionstore_upstream_reconnect_attempts",
        "Attempts to get failing upstream connections back (fleet-wide, from Redis): "
        "failed = operations that spent their retries and reconnect-job attempts that "
        "failed; succeeded = records back from reconnecting to connected",
        labels=["result"],
    )
    attempts.add_metric(["failed"], totals.failed_attempts)
    attempts.add_metric(["succeeded"], totals.reconnected)
    yield attempts
    transitions = CounterMetricFamily(
        "sessionstore_upstream_transitions",
        "Changes of state of upstream connection records, by the state changed to "
        "(fleet-wide, from Redis)",
        labels=["to"],
    )
    for state, count in sorted(totals.transitions.items()):
        transitions.add_metric([state], count)
    yield transitions
    registrations = CounterMetricFamily(
        "sessionstore_upstream_registrations",
        "Upstream connections registered and removed on purpose (fleet-wide, from Redis)",
        labels=["change"],
    )
    registrations.add_metric(["registered"], totals.registered)
    registrations.add_metric(["removed"], totals.removed)
    yield registrations
