"""The connector protocol: how the pool opens, checks and closes one kind of upstream.

A connector knows one protocol (IMAP first). The pool knows none: it asks the
connector registered for ``spec.kind`` to connect, to probe and to close, and
to say whether a result that came back is in fact a failure (IMAP ``NO``).
Connectors must put every network call under a timeout and report a dropped
connection through `Connection.alive`, so the pool never hangs on a dead
socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

from ._classify import Verdict
from ._spec import UpstreamSpec

T = TypeVar("T")


@runtime_checkable
class Connection(Protocol):
    """An open connection, used by one operation at a time.

    .. versionadded:: 0.1
    """

    @property
    def alive(self) -> bool:
        """False once the connector knows the connection is gone (lost, BYE)."""
        ...


@runtime_checkable
class Connector(Protocol):
    """Opens, probes and closes connections of one kind (``spec.kind``).

    .. versionadded:: 0.1
    """

    #: The `UpstreamSpec.kind` this connector serves.
    kind: str

    async def connect(self, spec: UpstreamSpec, secret: SecretStr | None) -> Any:
        """Open and authenticate a connection; raise a fault the classifier knows.

        Must finish within the connector's connect timeout.
        """
        ...

    async def probe(self, connection: Any) -> None:
        """A cheap round trip (IMAP NOOP) that raises if the connection is unusable."""
        ...

    async def close(self, connection: Any) -> None:
        """Close politely if possible, within a timeout; never raise."""
        ...

    def result_fault(self, value: object) -> Exception | None:
        """The fault hidden in a result (IMAP NO/BAD comes back as a value), else None.

        The pool classifies it as if the operation had raised it.
        """
        ...

    def redact(self, text: str, secret: SecretStr | None) -> str:
        """`text` with anything secret masked, for logs and records."""
        ...


#: Error texts kept in records and logs are cut to this length.
MAX_ERROR_CHARS = 300


def describe(
    verdict: Verdict,
    exc: BaseException,
    *,
    connector: Connector | None = None,
    secret: SecretStr | None = None,
) -> str:
    """``<reason>: <type>: <message>`` for logs and records, secrets redacted, cut short."""
    text = f"{verdict.reason}: {type(exc).__name__}: {exc}".rstrip(": ")
    if connector is not None:
        text = connector.redact(text, secret)
    return text[:MAX_ERROR_CHARS]


#: An operation the pool runs on a connection: ``async def op(conn) -> T``.
Operation = Callable[[Any], Awaitable[T]]


class Served(BaseModel, Generic[T]):
    """What `UpstreamPool.run` returns: the value and who served it.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    value: T
    #: The upstream that answered (the primary or one of the fallbacks).
    upstream: str
    #: Attempts made on that upstream (1 when the first try worked).
    attempts: int
    #: Upstreams tried before it, in order, with why each was passed over.
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def fell_back(self) -> bool:
        """True when a fallback served the operation."""
        return bool(self.skipped)


class HealthReport(BaseModel):
    """One connection's health, with at least the fields a
    mail client's health check reports.

    .. versionadded:: 0.1
    """

    model_config = ConfigDict(frozen=True)

    healthy: bool
    timestamp: datetime
    #: The host (an MCP stdio server: its command) and port (0 for stdio).
    host: str
    port: int
    #: The probe's round trip (None when no probe could be sent).
    response_time_ms: float | None
    #: When the connection last did useful work (None: never opened here).
    last_activity: datetime | None
    #: Classifier label and message of the failure (secrets redacted).
    error: str | None
    session_id: str
    upstream: str
    #: The fleet-wide record's state after the check.
    state: str
    #: Age of the in-process connection in seconds (None: none open).
    connection_age_s: float | None = None
    #: ``host:port``, or an MCP server's URL or command line.
    address: str = ""
    #: Failed attempts since the last success (the record's ``attempts``).
    error_count: int = 0

    def as_dict(self) -> dict[str, object]:
        """The health-check shape: ISO timestamps, ``response_time_ms`` rounded to 0.01."""
        return {
            "healthy": self.healthy,
            "timestamp": self.timestamp.isoformat(),
            "host": self.host,
            "port": self.port,
            "response_time_ms": None
            if self.response_time_ms is None
            else round(self.response_time_ms, 2),
            "last_activity": self.last_activity.isoformat() if self.last_activity else None,
            "error": self.error,
        }
