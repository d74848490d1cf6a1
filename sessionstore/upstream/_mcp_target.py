"""Where an MCP upstream is: a URL (Streamable HTTP, SSE) or a command (stdio).

`McpTarget` is the non-secret part of an MCP upstream, kept in the record in
Redis like an IMAP host and port. A bearer token or secret headers (HTTP) and
secret environment variables (stdio) are the upstream's credential, sealed
like an IMAP password; see `McpConnector`. `McpTarget.from_connection` takes
the connection dicts of langchain-mcp-adapters' ``MultiServerMCPClient``
(``{"transport": "stdio", "command": ..., "args": [...]}``) with the same
errors for a missing transport, url, command or args.

This module does not import the MCP SDK.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..exceptions import InvalidInput

#: Transports of seed-style connection dicts; ``websocket`` is named so its error is clear.
TRANSPORTS = ("stdio", "streamable_http", "sse", "websocket")
#: Transports the pinned SDK ships a client for.
SUPPORTED_TRANSPORTS = ("stdio", "streamable_http", "sse")

McpTransport = Literal["stdio", "streamable_http", "sse"]
#: How the connection settles its protocol revision (the SDK ``Client``'s ``mode``):
#: ``legacy``, the ``initialize`` handshake (an HTTP upstream session can move
#: between processes); ``auto``, ``server/discover`` first (the 2026-07-28
#: revision, stateless), falling back to ``initialize`` for an older server.
McpMode = Literal["legacy", "auto"]

_HEADER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _one_line(value: str, what: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{what} must not contain CR, LF or NUL")
    return value


class McpTarget(BaseModel):
    """An MCP server to connect to: by URL or by command.

    Args:
        transport: ``streamable_http``, ``sse`` (URL) or ``stdio`` (command).
        url: absolute ``http(s)://`` URL of the MCP endpoint (HTTP transports).
        command, args, env, cwd: the child process (stdio); ``env`` is merged
            over the SDK's safe default environment (PATH, HOME...).
        headers: extra HTTP headers that are not secret; secret ones belong in
            the upstream's credential.
        mode: ``legacy`` (the ``initialize`` handshake, the default) or ``auto``
            (``server/discover`` first; see `McpMode`).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: McpTransport
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = Field(default=(), max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=64)
    cwd: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    mode: McpMode = "legacy"

    @field_validator("url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _one_line(value, "url")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an absolute http:// or https:// URL, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("url must not carry a user or password; seal them as the credential")
        try:
            parts.port  # noqa: B018  (raises for a port that is no number or out of range)
        except ValueError:
            raise ValueError("url has a port that is not 1-65535") from None
        return value

    @field_validator("command", "cwd")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return None if value is None else _one_line(value, "command and cwd")

    @field_validator("args", mode="before")
    @classmethod
    def _empty_args(cls, value: Any) -> Any:
        # Redis' cjson writes an empty list back as ``{}`` when a script rewrites a record.
        return () if value == {} else value

    @field_validator("args")
    @classmethod
    def _plain_args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arg in value:
            if "\0" in arg:
                raise ValueError("args must not contain NUL")
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or not set(name) <= _HEADER_NAME_CHARS:
                raise ValueError(f"header name {name!r} is not a token")
            _one_line(text, f"header {name}")
        return value

    @model_validator(mode="after")
    def _fits_transport(self) -> McpTarget:
        if self.transport == "stdio":
            if self.command is None:
                raise ValueError("'command' parameter is required for stdio connection")
            if self.url is not None or self.headers:
                raise ValueError("a stdio connection takes no url or headers")
        else:
            if self.url is None:
                raise ValueError(f"'url' parameter is required for {self.transport} connection")
            if self.command is not None or self.args or self.env or self.cwd:
                raise ValueError(f"a {self.transport} connection takes no command, args, env, cwd")
        return self

    @classmethod
    def from_connection(cls, connection: Mapping[str, Any]) -> McpTarget:
        """A target from a ``MultiServerMCPClient`` connection dict.

        Raises:
            InvalidInput: no or an unknown transport, a missing url, command or
                args, a relative URL, or keys this transport does not take.
        """
        if "transport" not in connection:
            raise InvalidInput(
                "Configuration error: Missing 'transport' key in server configuration. "
                "Each server must include 'transport' with one of: "
                + ", ".join(repr(t) for t in TRANSPORTS)
            )
        transport = connection["transport"]
        if transport == "websocket":
            raise InvalidInput(
                "Unsupported transport: 'websocket': the installed MCP SDK ships no "
                "WebSocket client; use 'streamable_http'"
            )
        if transport not in SUPPORTED_TRANSPORTS:
            raise InvalidInput(
                f"Unsupported transport: {transport!r}. Must be one of: "
                + ", ".join(repr(t) for t in SUPPORTED_TRANSPORTS)
            )
        params = {k: v for k, v in connection.items() if k != "transport"}
        if transport == "stdio":
            if "command" not in params:
                raise InvalidInput("'command' parameter is required for stdio connection")
            if "args" not in params:
                raise InvalidInput("'args' parameter is required for stdio connection")
        elif "url" not in params:
            raise InvalidInput(f"'url' parameter is required for {transport} connection")
        try:
            return cls.model_validate({"transport": transport, **params})
        except ValidationError as exc:
            raise InvalidInput(f"bad {transport} connection: {_first_error(exc)}") from None

    @property
    def address(self) -> str:
        """The URL, or the command line (for logs and health output)."""
        if self.url is not None:
            return self.url
        return " ".join([self.command or "", *self.args])

    @property
    def host_and_port(self) -> tuple[str, int] | None:
        """(host, port) of the URL; None for stdio."""
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        default = 443 if parts.scheme == "https" else 80
        return (parts.hostname or "", parts.port or default)

    def breaker_name(self) -> str:
        """``mcp:<host>:<port>`` (``mcp+plain`` for http://), ``mcp+stdio:<command>-<digest>``.

        Every session using one HTTP server shares its breaker; a stdio server
        is a program, so every session running the same command line shares one.
        """
        where = self.host_and_port
        if where is not None:
            assert self.url is not None
            kind = "mcp" if self.url.startswith("https:") else "mcp+plain"
            return f"{kind}:{where[0]}:{where[1]}"
        line = "\0".join([self.command or "", *self.args, self.cwd or ""])
        digest = hashlib.blake2b(line.encode(), digest_size=4).hexdigest()
        name = posixpath.basename(self.command or "") or "stdio"
        return f"mcp+stdio:{name}-{digest}"


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


__all__ = ["SUPPORTED_TRANSPORTS", "TRANSPORTS", "McpMode", "McpTarget", "McpTransport"]
