"""One pooled connection slot: a session's upstream, as this process holds it."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from ._records import UpstreamRecord, UpstreamState


@dataclass(eq=False)
class Entry:
    """A session's upstream in this process: its record, its socket, its clocks.

    Operations on one entry run one at a time (`lock`): a connection such as
    an IMAP session has a selected mailbox and cannot interleave two callers.
    """

    session_id: str
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The record as last read or written (spec and credential come from it).
    record: UpstreamRecord | None = None
    connection: Any = None
    #: Kept only to redact it from error texts; never logged or stored.
    secret: SecretStr | None = None
    #: Pool-clock times (monotonic seconds).
    opened_at: float = 0.0
    last_used: float = 0.0
    #: Wall-clock time of the last useful call (health output).
    last_activity: datetime | None = None
    #: Pool-clock time of the last success written to Redis, and the state written.
    recorded_at: float = -math.inf
    recorded_state: UpstreamState | None = None
    #: Pool-clock time until which a breaker refusal needs no new reconnect job.
    recovery_asked_until: float = -math.inf

    @property
    def key(self) -> tuple[str, str]:
        """(session id, upstream name)."""
        return (self.session_id, self.name)

    def age(self, now: float) -> float | None:
        """Seconds since the connection was opened, or None when none is open."""
        return None if self.connection is None else now - self.opened_at


def short_id(session_id: str) -> str:
    """A session id cut for logs: a session id is a bearer secret."""
    return session_id[:6] + "..."
