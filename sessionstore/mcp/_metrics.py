"""Prometheus counters of one MCP replica (``/metrics`` of `mcp_app`).

Per-process counters: each replica counts what it did (sessions it opened or
adopted, local copies it dropped, streams it resumed, events it replayed), so
sum them across replicas. Each app has its own registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class McpMetrics:
    """The counters `RoamingSessionManager` and `RedisEventStore` update.

    .. versionadded:: 0.1
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions_opened = Counter(
            "sessionstore_mcp_sessions_opened", "MCP sessions opened by initialize here", registry=r
        )
        self.sessions_adopted = Counter(
            "sessionstore_mcp_sessions_adopted",
            "MCP sessions opened elsewhere whose local copy this replica rebuilt from the record",
            registry=r,
        )
        self.local_dropped = Counter(
            "sessionstore_mcp_local_sessions_dropped",
            "Local copies of MCP sessions dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.streams_opened = Counter(
            "sessionstore_mcp_streams_opened",
            "Standalone GET streams opened here (served from the session's Redis stream)",
            registry=r,
        )
        self.streams_resumed = Counter(
            "sessionstore_mcp_streams_resumed",
            "SSE streams resumed here with Last-Event-ID",
            registry=r,
        )
        self.events_replayed = Counter(
            "sessionstore_mcp_events_replayed",
            "Stored MCP events sent again to a resuming client",
            registry=r,
        )
        self.answers_relayed = Counter(
            "sessionstore_mcp_answers_relayed",
            "Client answers to server-initiated requests relayed to the replica that sent them",
            registry=r,
        )
        self.events_stored = Counter(
            "sessionstore_mcp_events_stored", "MCP events written to Redis streams", registry=r
        )
        self.local_sessions = Gauge(
            "sessionstore_mcp_local_sessions",
            "MCP sessions this replica holds a local copy of now",
            registry=r,
        )
