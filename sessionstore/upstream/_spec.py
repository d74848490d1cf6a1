"""What an upstream connection is: where it goes, as who, and its stored credential.

An `UpstreamSpec` holds nothing secret, so it can sit in Redis in the
connection's record, where any replica or worker reads it to reconnect. The
secret itself is a `StoredCredential`: a reference a credential provider
resolves, or a Fernet token; never the plaintext.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._ids import check_name
from ._mcp_target import McpTarget

_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_HOST = re.compile(r"[A-Za-z0-9.:-]{1,253}")
_REF = re.compile(r"[a-z][a-z0-9_]{0,31}:[A-Za-z0-9_.@+=/-]{1,256}")

OptionValue = str | int | float | bool


class UpstreamSpec(BaseModel):
    """One upstream connection of a session (the user's IMAP account, an MCP server).

    Args:
        name: the session's name for it (``mail``, ``mail-backup``); a field name.
        kind: which connector serves it (``imap``, ``mcp``).
        host, port: where it is (IMAP; for MCP over HTTP they come from the URL).
        username: who logs in (IMAP); the secret is stored apart (`StoredCredential`).
        mcp: the MCP server (URL or command) for kind ``mcp``.
        tls: implicit TLS (IMAPS on 993); False for plain IMAP (tests, STARTTLS-less).
        breaker: the circuit breaker's name; defaults to ``<kind>:<host>:<port>``
            (``<kind>+plain:<host>:<port>`` without TLS), so every session using
            that host the same way shares one breaker.
        options: connector-specific settings (plain values only).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str = "imap"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = Field(default=None, min_length=1, max_length=320)
    tls: bool = True
    breaker: str | None = None
    options: dict[str, OptionValue] = Field(default_factory=dict, max_length=32)
    mcp: McpTarget | None = None

    @field_validator("name", "breaker")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "upstream name")

    @field_validator("kind")
    @classmethod
    def _plain_kind(cls, value: str) -> str:
        if not _KIND.fullmatch(value):
            raise ValueError("kind must be 1-32 characters of a-z 0-9 _")
        return value

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.fullmatch(value):
            raise ValueError("host must be a DNS name or an IP address")
        return value

    @field_validator("username")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        # A CR or LF would end an IMAP command line early (command injection).
        if value is not None and any(ch in value for ch in "\r\n\0"):
            raise ValueError("username must not contain CR, LF or NUL")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> UpstreamSpec:
        if self.kind == "mcp":
            if self.mcp is None:
                raise ValueError("an mcp upstream needs `mcp` (a URL or a command)")
            if self.host is not None or self.port is not None or self.username is not None:
                raise ValueError("an mcp upstream takes its address from `mcp`, not host/port")
            return self
        if self.mcp is not None:
            raise ValueError(f"`mcp` is only for kind mcp, not {self.kind}")
        if self.host is None or self.port is None or self.username is None:
            raise ValueError(f"a {self.kind} upstream needs host, port and username")
        return self

    @property
    def breaker_name(self) -> str:
        """The circuit breaker this connection reports to.

        Plain and TLS connections to one port get separate breakers: a port speaks
        one of the two, so sessions registered the wrong way fail every call, and
        those failures must not trip the breaker the correct sessions share.
        """
        if self.breaker:
            return self.breaker
        if self.mcp is not None:
            return self.mcp.breaker_name()
        kind = self.kind if self.tls else f"{self.kind}+plain"
        return f"{kind}:{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` (the URL or command line for MCP), for logs and health output."""
        if self.mcp is not None:
            return self.mcp.address
        return f"{self.host}:{self.port}"

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) for health output; an MCP URL's, or (command, 0) for stdio."""
        if self.mcp is not None:
            return self.mcp.host_and_port or (self.mcp.command or "", 0)
        assert self.host is not None and self.port is not None
        return (self.host, self.port)


class StoredCredential(BaseModel):
    """The credential as stored in Redis: exactly one of a reference or a token.

    - ``ref``: ``<scheme>:<name>``, resolved by a `CredentialProvider` (``env:``,
      ``file:``...); the secret never reaches Redis at all.
    - ``fernet``: the secret encrypted with a key from settings (`SecretBox`).

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    ref: str | None = None
    fernet: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StoredCredential:
        if (self.ref is None) == (self.fernet is None):
            raise ValueError("a stored credential is either a ref or a fernet token")
        if self.ref is not None and not _REF.fullmatch(self.ref):
            raise ValueError("a credential ref is <scheme>:<name>, e.g. env:IMAP_PASSWORD")
        return self

    @property
    def scheme(self) -> str:
        """``fernet`` or the reference's scheme (``env``, ``file``...)."""
        return "fernet" if self.ref is None else self.ref.partition(":")[0]
