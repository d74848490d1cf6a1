"""What a session record keeps of the MCP handshake, so any replica can adopt the session.

The record lives in the session's metadata under ``mcp`` (written once, by the
``create`` that answers ``initialize``): the negotiated protocol version, the
client's ``initialize`` params (client info, capabilities) and the credential
that opened the session. A replica rebuilding the SDK's local session needs
nothing else.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    InitializeRequestParams,
    JSONRPCRequest,
    jsonrpc_message_adapter,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from ._sdk import negotiated_version

#: The metadata key holding the `HandshakeRecord`.
METADATA_KEY = "mcp"


class HandshakeRecord(BaseModel):
    """The handshake facts of one MCP session, as kept in its record.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    protocol_version: str
    #: The client's ``initialize`` params in wire form (camelCase keys).
    client: dict[str, Any]
    #: The credential that opened the session (``client_id``, ``issuer``, ``subject``), if any.
    owner: dict[str, Any] | None = None

    def client_params(self) -> InitializeRequestParams:
        """The ``initialize`` params as the SDK's model."""
        return InitializeRequestParams.model_validate(self.client, by_name=False)

    def metadata(self) -> dict[str, Any]:
        """The session metadata that carries this record."""
        return {METADATA_KEY: self.model_dump(mode="json")}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> HandshakeRecord | None:
        """The record in a session's metadata; None for a session MCP did not open."""
        raw = metadata.get(METADATA_KEY)
        if not isinstance(raw, dict):
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return None


class OpeningRejected(Exception):
    """A request without a session id that cannot open one; nothing was created."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def read_initialize(body: bytes, owner: dict[str, Any] | None) -> HandshakeRecord:
    """The record an ``initialize`` request `body` opens.

    Raises:
        OpeningRejected: the body is not JSON, not JSON-RPC, not ``initialize``, or
            its params are invalid.
    """
    try:
        raw = pydantic_core.from_json(body)
    except ValueError:
        raise OpeningRejected(400, PARSE_ERROR, "Parse error: the body is not JSON") from None
    try:
        message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
    except ValidationError:
        raise OpeningRejected(400, INVALID_REQUEST, "Invalid JSON-RPC message") from None
    if not isinstance(message, JSONRPCRequest) or message.method != "initialize":
        raise OpeningRejected(400, INVALID_REQUEST, "Bad Request: Missing session ID")
    try:
        params = InitializeRequestParams.model_validate(message.params or {}, by_name=False)
    except ValidationError:
        raise OpeningRejected(400, INVALID_PARAMS, "Invalid initialize params") from None
    return HandshakeRecord(
        protocol_version=negotiated_version(params.protocol_version),
        client=params.model_dump(mode="json", by_alias=True, exclude_none=True),
        owner=owner,
    )
