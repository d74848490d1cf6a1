"""The MCP SDK pieces `sessionstore.mcp` builds on, and the SDK range they are tested with.

Public extension points (the transport, the `EventStore` ABC, ASGI wrapping)
are used as they are documented. Three pieces are below the SDK's documented
surface, so the range is pinned and `check_sdk()` refuses an untested SDK:

- `serve_connection` and `Connection` (``mcp.server.runner``,
  ``mcp.server.connection``): a replica that adopts a session builds the
  handshake-era `Connection` itself and marks it initialized from the record,
  because the SDK only reaches that state by seeing ``initialize``.
- `JSONRPCDispatcher` (``mcp.shared.jsonrpc_dispatcher``), wired the way
  ``serve_loop`` wires it (``initialize`` handled inline).
- `handle_modern_request` (``mcp.server._streamable_http_modern``, private): the
  2026-07-28 single-exchange entry, which the SDK's session manager calls for
  requests naming a modern protocol version.

``tests/mcp/test_sdk_pin.py`` checks the installed version against the range
and that each piece still has the shape used here.
"""

from __future__ import annotations

from importlib.metadata import version

from mcp.server._streamable_http_modern import handle_modern_request
from mcp.server.connection import Connection
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import (
    GET_STREAM_KEY,
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

#: The SDK releases this package is tested with (the ``mcp`` extra pins the same range).
SDK_RANGE = (">=2.3.0", "<2.4")
_LOW, _HIGH = (2, 3), (2, 4)

__all__ = [
    "GET_STREAM_KEY",
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "LAST_EVENT_ID_HEADER",
    "LATEST_HANDSHAKE_VERSION",
    "MCP_SESSION_ID_HEADER",
    "SDK_RANGE",
    "Connection",
    "EventCallback",
    "EventId",
    "EventMessage",
    "EventStore",
    "JSONRPCDispatcher",
    "StreamId",
    "StreamableHTTPServerTransport",
    "check_sdk",
    "handle_modern_request",
    "negotiated_version",
    "serve_connection",
]


def check_sdk() -> str:
    """The installed SDK version; raises `RuntimeError` outside `SDK_RANGE`.

    .. versionadded:: 0.1
    """
    installed = version("mcp")
    parts = tuple(int(p) for p in installed.split(".")[:2] if p.isdigit())
    if not _LOW <= parts < _HIGH:
        raise RuntimeError(
            f"sessionstore.mcp is tested with mcp {' '.join(SDK_RANGE)}, found {installed}"
        )
    return installed


def negotiated_version(requested: str) -> str:
    """The protocol version the SDK settles on for an ``initialize`` asking `requested`.

    The same rule as the SDK's handshake (tested against it), computed here so
    the record can be written before the SDK has answered.
    """
    return requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
