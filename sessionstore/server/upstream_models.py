"""Request and response bodies of the upstream endpoints (``/sessions/{id}/upstreams``).

The registration body is one of three shapes, told apart by ``kind`` and then
``transport`` (`UpstreamBody`): an IMAP account (host, port, username; the
shape without ``kind`` too), an MCP server by URL (`RegisterMcpHttp`) or by
command (`RegisterMcpStdio`). Each refuses unknown fields (``extra="forbid"``)
and carries the bounds `UpstreamSpec`, `McpTarget` and `StoredCredential`
check again, so bad input is a clear 4xx before anything reaches Redis. No
response ever holds a secret: a stored credential is shown as its reference,
or as ``encrypted``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, model_validator

from .._ids import NAME_PATTERN
from ..breaker import BreakerSnapshot, BreakerState
from ..upstream import HealthReport, McpTarget, UpstreamRecord

#: An upstream's name in a URL path segment: the name rule without ``/``.
UPSTREAM_NAME_PATTERN = r"^[A-Za-z0-9_.:@+=-]{1,256}$"
#: Keep in step with ``sessionstore.upstream._spec`` (checked again there).
_KIND = r"^[a-z][a-z0-9_]{0,31}$"
_HOST = r"^[A-Za-z0-9.:-]{1,253}$"
_REF = r"^[a-z][a-z0-9_]{0,31}:[A-Za-z0-9_.@+=/-]{1,256}$"
#: One line: a CR or LF would end an IMAP command early.
_ONE_LINE = r"^[^\r\n\x00]*$"

Secret = Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class RegisterUpstream(BaseModel):
    """An IMAP account (``PUT /sessions/{id}/upstreams/{name}``): where, as who, the credential.

    Exactly one of ``secret`` (encrypted with ``SESSIONSTORE_SECRET_KEY`` before it
    is stored; refused without a key) and ``credential_ref`` (``env:NAME``,
    ``file:NAME``: resolved by the connecting process; admin token only).
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        # Exactly one of the two is a string (the store refuses both and neither).
        json_schema_extra={
            "oneOf": [
                {"required": ["secret"], "properties": {"secret": {"type": "string"}}},
                {
                    "required": ["credential_ref"],
                    "properties": {"credential_ref": {"type": "string"}},
                },
            ]
        },
    )

    #: One of the connector kinds this server has (the schema lists them).
    kind: Annotated[str, Field(pattern=_KIND)] = "imap"
    host: Annotated[str, Field(pattern=_HOST, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)]
    #: Implicit TLS (IMAPS on 993); false for plain IMAP.
    tls: bool = True
    username: Annotated[str, Field(min_length=1, max_length=320, pattern=_ONE_LINE)]
    secret: Secret | None = None
    credential_ref: Annotated[str, Field(pattern=_REF, max_length=290)] | None = None
    #: The circuit breaker to report to (default ``<kind>:<host>:<port>``); admin token only.
    breaker: Annotated[str, Field(pattern=NAME_PATTERN, max_length=256)] | None = None


#: An MCP endpoint: an absolute http(s) URL without user or password (checked again
#: by `McpTarget`).
_URL = r"^https?://[A-Za-z0-9.:\[\]-]{1,253}(/[^\s@]*)?$"
#: A header name: a token (and none the transport owns: `_RESERVED_HEADERS`, ``Mcp-*``).
_HEADER_NAME = r"^[A-Za-z0-9_-]{1,64}$"
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "connection",
                               "transfer-encoding", "accept"})  # fmt: skip
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_ARG = r"^[^\x00]*$"
#: Either a secret or a reference, or neither (many MCP servers take no credential).
_AT_MOST_ONE_CREDENTIAL = "give a secret or credential_ref, not both"


class _McpBody(BaseModel):
    """What both MCP shapes share: the kind, the revision mode, the admin-only fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["mcp"]
    #: ``legacy``: the ``initialize`` handshake; ``auto``: ``server/discover`` first
    #: (the 2026-07-28 revision), falling back to ``initialize``.
    mode: Literal["legacy", "auto"] = "legacy"
    #: ``env:NAME`` / ``file:NAME`` holding the secret (a bearer token or a JSON
    #: object); admin token only.
    credential_ref: Annotated[str, Field(pattern=_REF, max_length=290)] | None = None
    #: The circuit breaker to report to (default ``mcp:<host>:<port>`` by URL,
    #: ``mcp+stdio:<program>-<digest>`` by command); admin token only.
    breaker: Annotated[str, Field(pattern=NAME_PATTERN, max_length=256)] | None = None

    def sealed_secret(self) -> SecretStr | None:
        """The secret the connector takes (a token, or a JSON object), to be sealed."""
        raise NotImplementedError


def _one_line_secrets(*secrets: SecretStr | None) -> None:
    # A CR or LF in a header value or environment variable would split it.
    for secret in secrets:
        if secret is not None and any(ch in secret.get_secret_value() for ch in "\r\n\0"):
            raise ValueError("a secret value must not contain CR, LF or NUL")


class RegisterMcpHttp(_McpBody):
    """An MCP server by URL (Streamable HTTP or SSE), with an optional credential.

    ``bearer_token`` is sent as ``Authorization: Bearer ...``; ``headers`` are
    sent as given. Both are the upstream's secret: sealed with
    ``SESSIONSTORE_SECRET_KEY`` before they are stored, never shown again.
    Or ``credential_ref`` (admin token only), or no credential at all.
    """

    transport: Literal["streamable_http", "sse"]
    url: Annotated[str, Field(pattern=_URL, max_length=2048)]
    bearer_token: Secret | None = None
    headers: (
        Annotated[
            dict[Annotated[str, Field(pattern=_HEADER_NAME)], Secret],
            Field(min_length=1, max_length=32),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_credential(self) -> RegisterMcpHttp:
        if self.credential_ref is not None and (self.bearer_token or self.headers):
            raise ValueError(_AT_MOST_ONE_CREDENTIAL)
        _one_line_secrets(self.bearer_token, *(self.headers or {}).values())
        for name in self.headers or {}:
            lower = name.lower()
            if (
                lower in _RESERVED_HEADERS
                or lower.startswith("mcp-")
                or (self.bearer_token is not None and lower == "authorization")
            ):
                raise ValueError(f"header {name} is set by the transport or bearer_token")
        return self

    def sealed_secret(self) -> SecretStr | None:
        """A bearer token alone as itself; headers (and a token) as a JSON object."""
        if not self.headers:
            return self.bearer_token
        values = {name: value.get_secret_value() for name, value in self.headers.items()}
        if self.bearer_token is not None:
            values["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        return SecretStr(json.dumps(values))


class RegisterMcpStdio(_McpBody):
    """An MCP server as a child process: ``command`` with ``args``, ``env``, ``cwd``.

    Admin token only (it runs a program on every replica and worker that
    connects), and only a command ``SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS``
    lists. ``env`` is stored in the record as given (nothing secret there);
    ``secret_env`` is sealed like a password and merged over it in the child.
    """

    transport: Literal["stdio"]
    command: Annotated[str, Field(min_length=1, max_length=1024, pattern=_ONE_LINE)]
    args: Annotated[
        list[Annotated[str, Field(max_length=4096, pattern=_ARG)]], Field(max_length=64)
    ] = []
    env: Annotated[
        dict[
            Annotated[str, Field(pattern=_ENV_NAME)],
            Annotated[str, Field(max_length=4096, pattern=_ARG)],
        ],
        Field(max_length=64),
    ] = {}
    cwd: Annotated[str, Field(min_length=1, max_length=1024, pattern=_ONE_LINE)] | None = None
    secret_env: (
        Annotated[
            dict[Annotated[str, Field(pattern=_ENV_NAME)], Secret],
            Field(min_length=1, max_length=64),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_credential(self) -> RegisterMcpStdio:
        if self.credential_ref is not None and self.secret_env:
            raise ValueError(_AT_MOST_ONE_CREDENTIAL)
        _one_line_secrets(*(self.secret_env or {}).values())
        return self

    def sealed_secret(self) -> SecretStr | None:
        """The secret environment as a JSON object."""
        if not self.secret_env:
            return None
        return SecretStr(
            json.dumps({name: value.get_secret_value() for name, value in self.secret_env.items()})
        )


def _shape_of(body: Any) -> str:
    """The body's shape: ``mcp_stdio``, ``mcp_http`` (kind ``mcp``), else ``imap``.

    Always a tag, so a refusal names the fields of the shape the body is closest
    to, and never echoes a value that was sent.
    """
    if isinstance(body, dict):
        kind, transport = body.get("kind"), body.get("transport")
    else:
        kind, transport = getattr(body, "kind", None), getattr(body, "transport", None)
    if kind != "mcp":
        return "imap"
    return "mcp_stdio" if transport == "stdio" else "mcp_http"


#: ``PUT /sessions/{id}/upstreams/{name}``: an IMAP account, or an MCP server by URL
#: or by command.
UpstreamBody = Annotated[
    Annotated[RegisterUpstream, Tag("imap")]
    | Annotated[RegisterMcpHttp, Tag("mcp_http")]
    | Annotated[RegisterMcpStdio, Tag("mcp_stdio")],
    Discriminator(_shape_of),
]


class CredentialOut(BaseModel):
    """How the credential is stored; never the secret or its token."""

    #: ``ref``: a reference resolved where the connection is made; ``encrypted``: a
    #: Fernet token (``SESSIONSTORE_SECRET_KEY``).
    kind: Literal["ref", "encrypted", "none"]
    ref: str | None = None


class UpstreamOut(BaseModel):
    """One upstream connection's record, as every replica and worker sees it in Redis."""

    name: str
    kind: str
    host: str | None
    port: int | None
    tls: bool
    username: str | None
    #: An MCP upstream's URL or command (nothing secret).
    mcp: McpTarget | None = None
    #: The circuit breaker this connection reports to.
    breaker: str
    credential: CredentialOut
    #: connected, reconnecting, failed or closed (see docs/upstream.md).
    state: str
    registered_at: datetime
    updated_at: datetime
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    #: Failed attempts since the last success (calls and reconnect jobs).
    attempts: int
    #: When the scheduled reconnect job runs (None: none scheduled).
    next_attempt_at: datetime | None
    #: Round trip of the last health check, in milliseconds.
    response_time_ms: float | None
    checked_at: datetime | None

    @classmethod
    def of(cls, record: UpstreamRecord) -> UpstreamOut:
        """The API view of a record (the credential reduced to its kind and reference)."""
        spec, stored = record.spec, record.credential
        if stored is None:
            credential = CredentialOut(kind="none")
        elif stored.ref is not None:
            credential = CredentialOut(kind="ref", ref=stored.ref)
        else:
            credential = CredentialOut(kind="encrypted")
        return cls(
            name=spec.name,
            kind=spec.kind,
            host=spec.host,
            port=spec.port,
            tls=spec.tls,
            username=spec.username,
            mcp=spec.mcp,
            breaker=spec.breaker_name,
            credential=credential,
            state=record.state.value,
            registered_at=record.registered_at,
            updated_at=record.updated_at,
            last_success=record.last_success,
            last_error=record.last_error,
            last_error_at=record.last_error_at,
            attempts=record.attempts,
            next_attempt_at=record.next_attempt_at,
            response_time_ms=record.response_time_ms,
            checked_at=record.checked_at,
        )


class UpstreamList(BaseModel):
    """Every upstream connection of a session, by name."""

    upstreams: list[UpstreamOut]


class UpstreamBreakerOut(BaseModel):
    """The breaker of an upstream, as Redis holds it (the same for every replica)."""

    name: str
    state: BreakerState
    #: What a call would meet now (``half_open`` for an ``open`` breaker past its time).
    effective_state: BreakerState

    @classmethod
    def of(cls, snapshot: BreakerSnapshot) -> UpstreamBreakerOut:
        """The breaker part of a snapshot."""
        return cls(
            name=snapshot.name, state=snapshot.state, effective_state=snapshot.effective_state
        )

    @property
    def lets_callers_through(self) -> bool:
        """True when a call would pass (closed or forced closed)."""
        return self.effective_state in (BreakerState.CLOSED, BreakerState.FORCED_CLOSED)


class UpstreamHealthOut(HealthReport):
    """A connection's health (`HealthReport`: healthy, timestamp, host, port,
    response_time_ms, last_activity, error, upstream, state, connection_age_s) and
    where it comes from."""

    #: Never in the answer: the caller named the session (its id is a bearer secret).
    session_id: str = Field(default="", exclude=True)
    #: When the reported health was established: the probe's time, or the record's
    #: last write (``source: record``).
    timestamp: datetime
    #: ``record``: read from Redis, no upstream I/O; ``probe``: a probe sent now from this
    #: replica (IMAP NOOP; MCP ping, or server/discover in the 2026-07-28 revision).
    source: Literal["record", "probe"]
    #: The record's state (after the probe, for ``source: probe``).
    state: str
    attempts: int
    next_attempt_at: datetime | None
    #: When the last health check ran (its round trip is ``response_time_ms``).
    checked_at: datetime | None
    breaker: UpstreamBreakerOut | None
    #: Age of this replica's connection in seconds (``source: probe`` only).
    connection_age_s: float | None = None

    @classmethod
    def from_record(
        cls, record: UpstreamRecord, breaker: UpstreamBreakerOut | None
    ) -> UpstreamHealthOut:
        """Health as the record says: healthy while ``connected``, the last thing recorded was
        a success (a success clears ``last_error``) and its breaker lets calls in."""
        passing = breaker is None or breaker.lets_callers_through
        healthy = record.state.value == "connected" and record.last_error is None and passing
        error = None
        if not healthy:
            error = record.last_error or (
                f"breaker_open: circuit breaker {breaker.name} is {breaker.effective_state.value}"
                if breaker is not None and not passing
                else f"{record.state.value}: not connected (probe=true checks the upstream now)"
            )
        return cls(
            healthy=healthy,
            timestamp=record.updated_at,
            host=record.spec.endpoint[0],
            port=record.spec.endpoint[1],
            response_time_ms=record.response_time_ms,
            last_activity=record.last_success,
            error=error,
            upstream=record.name,
            source="record",
            state=record.state.value,
            attempts=record.attempts,
            next_attempt_at=record.next_attempt_at,
            checked_at=record.checked_at,
            breaker=breaker,
        )

    @classmethod
    def from_probe(
        cls, report: HealthReport, record: UpstreamRecord | None, breaker: UpstreamBreakerOut | None
    ) -> UpstreamHealthOut:
        """Health as a live probe found it (`UpstreamPool.health`)."""
        return cls(
            **report.model_dump(exclude={"session_id"}),
            source="probe",
            attempts=record.attempts if record else 0,
            next_attempt_at=record.next_attempt_at if record else None,
            checked_at=record.checked_at if record else None,
            breaker=breaker,
        )
