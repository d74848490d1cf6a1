"""Upstream connections (IMAP first): connector protocol, pool, records, credentials.

- `Connector`: connect, probe, close; `sessionstore.upstream.imap.ImapConnector`
  is the IMAP one (aioimaplib, GPL-3.0, behind the ``imap`` extra: that module
  is the only one importing it, so this package imports without it).
- `UpstreamPool`: reuses healthy connections, refreshes them before their
  maximum age, runs operations with retry, breaker and fallback (`Served`
  says which upstream answered); `ImapClient` is seed 000's managed client.
- `UpstreamRecords`: each connection's record in Redis next to its session.
- `Credentials`, `SecretBox`, `EnvCredentials`, `FileCredentials`: secrets
  are stored as references or Fernet tokens, never in plaintext.
- `ArqReconnects`: reconnect jobs, one per connection fleet-wide.
- `BreakerGates`: the fleet's circuit breakers (`sessionstore.breaker`) as the
  pool and the reconnect jobs use them.
- `verify_upstream`: try a connection before registering it.
- `read_upstream_totals`: fleet-wide counters (registrations, failed attempts,
  reconnects, changes of state) kept by the record script in Redis.
"""

from __future__ import annotations

from ._connector import Connection, Connector, HealthReport, Operation, Served
from ._gates import BreakerGates, Gate, Gates, NoGates, Ticket
from ._imap_client import ImapClient
from ._pool import PoolState, UpstreamPool
from ._reconnect import (
    RECONNECT_JOB,
    ArqReconnects,
    Reconnector,
    ReconnectResult,
    ReconnectScheduler,
    reconnect_job_name,
)
from ._records import UpstreamRecord, UpstreamRecords, UpstreamState
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
    "RECONNECT_JOB",
    "ArqReconnects",
    "BreakerGates",
    "Connection",
    "Connector",
    "CredentialProvider",
    "Credentials",
    "EnvCredentials",
    "FileCredentials",
    "Gate",
    "Gates",
    "HealthReport",
    "ImapClient",
    "MaintenanceReport",
    "NoGates",
    "Operation",
    "PoolCensus",
    "PoolState",
    "ReconnectResult",
    "ReconnectScheduler",
    "Reconnector",
    "SecretBox",
    "Served",
    "StoredCredential",
    "Ticket",
    "UpstreamPool",
    "UpstreamRecord",
    "UpstreamRecords",
    "UpstreamSpec",
    "UpstreamState",
    "UpstreamTotals",
    "connectors_for",
    "credentials_for",
    "read_upstream_totals",
    "reconnect_job_name",
    "verify_upstream",
]
