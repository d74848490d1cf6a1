"""Error classification, backoff policies and provider profiles for upstream calls.

- `classify` turns a fault into a `Verdict`: retry on the same connection,
  reconnect then retry, or fail fast, and whether it counts against the
  upstream's circuit breaker. `classify_reply` does the same for an IMAP
  answer that came back as a result (``NO`` / ``BAD``).
- `BackoffPolicy`: exponential backoff with full or decorrelated jitter.
- `PROFILES` / `get_profile`: stable, unreliable, icloud, gmail, outlook.
- `set_testing`: zero every backoff wait in tests.

Nothing here imports aioimaplib or talks to Redis.
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
from ._faults import ConnectionDropped, ReplyError, ServerBye
from ._profiles import PROFILES, ProviderProfile, get_profile

__all__ = [
    "PROFILES",
    "RESPONSE_CODES",
    "TEXT_RULES",
    "Action",
    "BackoffPolicy",
    "ConnectionDropped",
    "Jitter",
    "ProviderProfile",
    "ReplyError",
    "ServerBye",
    "Verdict",
    "classify",
    "classify_reply",
    "classify_text",
    "get_profile",
    "is_testing",
    "set_testing",
]
