"""MCP servers on many replicas (the ``mcp`` extra; the only package that imports the SDK).

``mcp_app(server, Settings())`` serves an SDK server whose Streamable HTTP
sessions live in the session store, so any replica serves any request of any
session; `mcp_session()` gives tools the session's shared state. See docs/mcp.md.
"""

from __future__ import annotations

from ._app import lowlevel_server, mcp_app
from ._event_store import RedisEventStore
from ._fastmcp import SessionStateStore
from ._handshake import HandshakeRecord
from ._manager import RoamingSessionManager
from ._metrics import McpMetrics
from ._request_state import CallSessions, fleet_request_state_security
from ._sdk import SDK_RANGE, check_sdk
from ._state import McpSession, StateMutator, mcp_session
from ._subscriptions import RedisSubscriptionBus

__all__ = [
    "SDK_RANGE",
    "CallSessions",
    "HandshakeRecord",
    "McpMetrics",
    "McpSession",
    "RedisEventStore",
    "RedisSubscriptionBus",
    "RoamingSessionManager",
    "SessionStateStore",
    "StateMutator",
    "check_sdk",
    "fleet_request_state_security",
    "lowlevel_server",
    "mcp_app",
    "mcp_session",
]
