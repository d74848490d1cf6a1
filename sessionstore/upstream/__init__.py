"""Upstream connections (IMAP first): connector protocol, pool, records, credentials.

- `Connector`: connect, probe, close; `sessionstore.upstream.imap.ImapConnector`
  is the IMAP one (aioimaplib, GPL-3.0, behind the ``imap`` extra: that module
  is the only one importing it, so this package imports without it).
- `UpstreamPool`: reuses healthy connections, refreshes them before their
  maximum age, runs operations with retry, breaker and fallback (`Served`
  says which upstream answered); `ImapClient` is the managed IMAP client.
- `UpstreamRecords`: each connection's record in Redis next to its session.
- `Credentials`, `SecretBox`, `EnvCredentials`, `FileCredentials`: secrets
  are stored as references or Fernet tokens, never in plaintext.
- `ArqReconnects`: reconnect jobs, one per connection fleet-wide.
- `BreakerGates`: the fleet's circuit breakers (`sessionstore.breaker`) as the
  pool and the reconnect jobs use them.
- `verify_upstream`: try a connection before registering it.
- `read_upstream_totals`: fleet-wide counters (registrations, failed attempts,
  reconnects, changes of state) kept by the record script in Redis.
- Retry and classification (no I/O): `classify` turns a fault into a `Verdict`
  (retry on the same connection, reconnect then retry, or fail fast, and
  whether it counts against the breaker), `classify_reply` does the same for
  an IMAP ``NO``/``BAD`` answer; `BackoffPolicy` (exponential, full or
  decorrelated `Jitter`); `PROFILES`/`get_profile` (stable, unreliable,
  icloud, gmail, outlook); `set_testing` zeroes every backoff wait in tests;
  `UpstreamSettings` gathers them with the pool's timeouts and lifetimes.
"""

from __future__ import annotations

from ._backoff import BackoffPolicy, Jitter, is_testing, set_testing
from ._classify import (
    RESPONSE_CODES,
    TEXT_RULES,
    Action,
    Verdict,
    classify,
    classify_reply,
    classify_text,
)
from ._connector import Connection, Connector, HealthReport, Operation, Served
from ._faults import ConnectionDropped, ReplyError, ServerBye
from ._gates import BreakerGates, Gate, Gates, NoGates, Ticket
from ._imap_client import EmailMetadata, ImapClient
from ._mcp_client import McpServers
from ._mcp_target import McpTarget
from ._pool import PoolState, UpstreamPool
from ._profiles import PROFILES, ProviderProfile, get_profile
from ._reconnect import (
    RECONNECT_JOB,
    ArqReconnects,
    Reconnector,
    ReconnectResult,
    ReconnectScheduler,
    reconnect_job_name,
)
from ._records import UpstreamRecord, UpstreamRecords, UpstreamState
from ._settings import ProfileOverrides, UpstreamSettings, reconnect_policy
from ._setup import connectors_for, credentials_for
from ._spec import StoredCredential, UpstreamSpec
from ._totals import UpstreamTotals, read_upstream_totals
from ._upkeep import MaintenanceReport, PoolCensus
from ._verify import verify_upstream
from .credentials import (
    CredentialProvider,
    Credentials,
    EnvCredentials,
    FileCredentials,
    SecretBox,
)

__all__ = [
    "PROFILES",
    "RECONNECT_JOB",
    "RESPONSE_CODES",
    "TEXT_RULES",
    "Action",
    "ArqReconnects",
    "BackoffPolicy",
    "BreakerGates",
    "Connection",
    "ConnectionDropped",
    "Connector",
    "CredentialProvider",
    "Credentials",
    "EmailMetadata",
    "EnvCredentials",
    "FileCredentials",
    "Gate",
    "Gates",
    "HealthReport",
    "ImapClient",
    "Jitter",
    "MaintenanceReport",
    "McpServers",
    "McpTarget",
    "NoGates",
    "Operation",
    "PoolCensus",
    "PoolState",
    "ProfileOverrides",
    "ProviderProfile",
    "ReconnectResult",
    "ReconnectScheduler",
    "Reconnector",
    "ReplyError",
    "SecretBox",
    "Served",
    "ServerBye",
    "StoredCredential",
    "Ticket",
    "UpstreamPool",
    "UpstreamRecord",
    "UpstreamRecords",
    "UpstreamSettings",
    "UpstreamSpec",
    "UpstreamState",
    "UpstreamTotals",
    "Verdict",
    "classify",
    "classify_reply",
    "classify_text",
    "connectors_for",
    "credentials_for",
    "get_profile",
    "is_testing",
    "read_upstream_totals",
    "reconnect_job_name",
    "reconnect_policy",
    "set_testing",
    "verify_upstream",
]
