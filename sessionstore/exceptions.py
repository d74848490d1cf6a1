"""The errors sessionstore raises.

Every error is a `SessionStoreError`; the tree is shallow on purpose::

    SessionStoreError
    ├── InvalidInput                 bad argument; nothing was touched (also a ValueError)
    │   ├── InvalidSessionId         malformed id, refused before it reaches Redis
    │   └── PayloadTooLarge          metadata or state over a configured limit
    ├── SessionNotFound              no session and no tombstone under this id
    ├── SessionGone                  the id existed but is no longer usable
    │   ├── SessionExpired           idle or lifetime deadline passed (maybe superseded_by)
    │   ├── SessionClosed            deleted by a client or operator
    │   └── SessionRotated           replaced by a new id (superseded_by)
    ├── ConflictError                a precondition failed; re-read and retry
    │   ├── VersionConflict          compare-and-set on the version lost
    │   └── StaleFence               a newer lock fence exists
    ├── LimitExceeded                too many concurrent requests
    │   ├── SessionLimitExceeded     per session
    │   └── GlobalLimitExceeded      fleet-wide capacity
    ├── LockError
    │   ├── LockNotAcquired          held by someone else
    │   └── LockNotOwned             release or renew by a non-owner, or the lease lapsed
    ├── BreakerOpen                  an upstream's circuit breaker refused the call
    ├── UpstreamError                an upstream call failed (see upstream.classify)
    │   ├── UpstreamUnavailable      unreachable, dropped or timed out; retries spent (transient)
    │   ├── UpstreamRejected         refused: bad credentials, unknown mailbox... (not retried)
    │   └── UpstreamNotFound         the session has no upstream of that name
    └── BackendUnavailable           Redis could not be reached or did not answer in time

Each error carries its context as attributes (``session_id``, ``limit``...).
Driver errors are wrapped: ``raise BackendUnavailable(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BreakerOpen",
    "ConflictError",
    "GlobalLimitExceeded",
    "InvalidInput",
    "InvalidSessionId",
    "LimitExceeded",
    "LockError",
    "LockNotAcquired",
    "LockNotOwned",
    "PayloadTooLarge",
    "SessionClosed",
    "SessionExpired",
    "SessionGone",
    "SessionLimitExceeded",
    "SessionNotFound",
    "SessionRotated",
    "SessionStoreError",
    "StaleFence",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamRejected",
    "UpstreamUnavailable",
    "VersionConflict",
]


class SessionStoreError(Exception):
    """Base of every sessionstore error.

    .. versionadded:: 0.1
    """

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take context arguments, not the message: rebuild from the
        # instance's state so errors cross process boundaries (multiprocessing, arq).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[SessionStoreError], args: tuple[object, ...], state: dict[str, object]
) -> SessionStoreError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidInput(SessionStoreError, ValueError):
    """An argument was refused before anything was read or written."""


class InvalidSessionId(InvalidInput):
    """A session id that this store never issues; it never reaches the key space."""

    def __init__(self, reason: str) -> None:
        # The bad id itself is not echoed: it may be huge or hostile.
        super().__init__(f"invalid session id: {reason}")
        self.reason = reason


class PayloadTooLarge(InvalidInput):
    """Metadata or state beyond a configured size or count limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size}, over the limit of {limit}")
        self.what = what
        self.size = size
        self.limit = limit


class SessionNotFound(SessionStoreError):
    """No session and no tombstone under this id (never issued, or long gone)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} not found")
        self.session_id = session_id


class SessionGone(SessionStoreError):
    """The id was a session but can no longer be used.

    ``superseded_by`` names the session that replaced it, when there is one.
    """

    status = "gone"

    def __init__(self, session_id: str, superseded_by: str | None = None) -> None:
        tail = f", superseded by {superseded_by}" if superseded_by else ""
        super().__init__(f"session {session_id} is {self.status}{tail}")
        self.session_id = session_id
        self.superseded_by = superseded_by


class SessionExpired(SessionGone):
    """The session passed its idle or absolute deadline. `resume` issues a new one."""

    status = "expired"


class SessionClosed(SessionGone):
    """The session was deleted; it cannot be resumed."""

    status = "closed"


class SessionRotated(SessionGone):
    """The id was rotated away; the session lives on under ``superseded_by``."""

    status = "rotated"


class ConflictError(SessionStoreError):
    """A precondition failed because someone else wrote first."""

    def __init__(self, session_id: str, message: str) -> None:
        super().__init__(f"session {session_id}: {message}")
        self.session_id = session_id


class VersionConflict(ConflictError):
    """Compare-and-set lost: the session's version is not the expected one."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(session_id, f"version is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class StaleFence(ConflictError):
    """A write carried a lock fence older than the newest one granted."""

    def __init__(self, session_id: str, fence: int, newest: int) -> None:
        super().__init__(session_id, f"fence {fence} is stale, newest is {newest}")
        self.fence = fence
        self.newest = newest


class LimitExceeded(SessionStoreError):
    """Too many concurrent requests; ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, limit: int, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class SessionLimitExceeded(LimitExceeded):
    """The session already has its maximum of concurrent requests (HTTP 429)."""

    def __init__(self, session_id: str, limit: int) -> None:
        super().__init__(f"session {session_id} has {limit} requests in flight", limit)
        self.session_id = session_id


class GlobalLimitExceeded(LimitExceeded):
    """The fleet is at its concurrent request capacity (HTTP 503)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the fleet has {limit} requests in flight", limit)


class LockError(SessionStoreError):
    """Base of lock errors; carries the lock's name."""

    def __init__(self, lock_name: str, message: str) -> None:
        super().__init__(f"lock {lock_name}: {message}")
        self.lock_name = lock_name


class LockNotAcquired(LockError):
    """The lock is held by another owner."""


class LockNotOwned(LockError):
    """Release or renew by someone who does not hold the lock (or whose lease lapsed)."""


class BreakerOpen(SessionStoreError):
    """The upstream's circuit breaker is open (or half-open with no probe slot)."""

    def __init__(self, breaker: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {breaker} is open; retry in {retry_after:.1f}s")
        self.breaker = breaker
        self.retry_after = retry_after


class UpstreamError(SessionStoreError):
    """An upstream (IMAP...) call failed after the retry policy was spent."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"upstream {upstream}: {message}")
        self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, dropped the connection or timed out.

    Transient: the retry policy was spent (``attempts``) or a reconnect is
    already scheduled; ``retry_after`` (seconds) hints when to try again.
    ``reason`` is the classifier's label (``timeout``, ``connection_lost``...).
    """

    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        reason: str = "",
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(upstream, message)
        self.reason = reason
        self.attempts = attempts
        self.retry_after = retry_after


class UpstreamRejected(UpstreamError):
    """The upstream refused the request: retrying would not help.

    Bad credentials, an unknown mailbox, a malformed command. ``reason`` is
    the classifier's label (``auth_failed``, ``nonexistent``...). It never
    opens the upstream's circuit breaker.
    """

    def __init__(self, upstream: str, message: str, *, reason: str = "") -> None:
        super().__init__(upstream, message)
        self.reason = reason


class UpstreamNotFound(UpstreamError):
    """The session has no upstream connection registered under this name.

    Bad input, not an upstream failure: nothing was sent to any upstream.
    """


class BackendUnavailable(SessionStoreError):
    """Redis could not be reached or did not answer in time.

    Raised fast (connect and socket timeouts are settings) and never cached:
    the next call tries again, so the store recovers by itself.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
