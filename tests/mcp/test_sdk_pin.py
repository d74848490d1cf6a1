"""The SDK pin: the installed SDK is in the tested range, the extra pins the same range,
and every SDK piece used below its documented surface still has the shape relied on."""

from __future__ import annotations

import inspect
import logging
import tomllib
from importlib.metadata import version

import pytest
from mcp.server.runner import ServerRunner
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from sessionstore.mcp import SDK_RANGE, check_sdk
from sessionstore.mcp._logs import RedactSessionIds
from sessionstore.mcp._sdk import (
    Connection,
    JSONRPCDispatcher,
    StreamableHTTPServerTransport,
    handle_modern_request,
    negotiated_version,
    serve_connection,
)
from tests.fleet.served import ROOT


def test_installed_sdk_is_in_the_tested_range() -> None:
    """check_sdk accepts the installed SDK, which is a 2.3 release."""
    assert check_sdk() == version("mcp")
    assert version("mcp").startswith("2.3.")


def test_the_mcp_extra_pins_the_tested_range() -> None:
    """pyproject's ``mcp`` extra names exactly SDK_RANGE."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["mcp"] == ["mcp" + ",".join(SDK_RANGE)]


@pytest.mark.parametrize("requested", [*HANDSHAKE_PROTOCOL_VERSIONS, "1999-01-01", "2026-07-28"])
def test_negotiation_matches_the_sdk_handshake(requested: str) -> None:
    """The version written to the record is the one the SDK's handshake settles on."""
    params = {
        "protocolVersion": requested,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    _, sdk_choice = ServerRunner._negotiate_initialize(params)
    assert negotiated_version(requested) == sdk_choice


def test_internals_have_the_shape_used() -> None:
    """The SDK pieces used beneath its documented surface keep their signatures."""
    assert {"connection", "lifespan_state"} <= set(inspect.signature(serve_connection).parameters)
    assert "session_id" in inspect.signature(Connection.for_loop).parameters
    connection = Connection.for_loop(object(), session_id="s")  # type: ignore[arg-type]
    connection.client_params = None
    connection.protocol_version = "2025-11-25"
    connection.initialized.set()
    assert connection.session_id == "s" and connection.initialize_accepted
    assert "inline_methods" in inspect.signature(JSONRPCDispatcher).parameters
    assert list(inspect.signature(handle_modern_request).parameters) == [
        "app",
        "security_settings",
        "json_response",
        "lifespan_state",
        "scope",
        "receive",
        "send",
    ]
    transport = StreamableHTTPServerTransport("1.x", idle_timeout=1.0)
    assert transport.idle_scope is None and not transport.is_terminated


def test_session_ids_are_shortened_in_sdk_logs() -> None:
    """A full sessionstore id in an SDK log record keeps only its first characters."""
    session_id = "3.tebrWBRCv4_WKs6PpPNevoDV"
    record = logging.LogRecord(
        "mcp", logging.INFO, __file__, 1, "Terminating session: %s", (session_id,), None
    )
    assert RedactSessionIds().filter(record)
    assert record.getMessage() == "Terminating session: 3.tebr…"
