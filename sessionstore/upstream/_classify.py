"""What to do about a failed upstream call: retry, reconnect, or fail fast.

Every fault gets a `Verdict`: an `Action` and whether it counts against the
upstream's circuit breaker. The breaker is per upstream *host*, so faults that
belong to one account or one request (bad password, unknown mailbox,
throttling of one account, a polite BYE) never count; faults that say the
host is unwell (refused, reset, timed out, ``[UNAVAILABLE]``) do.

Sources of faults, in the order `classify` looks at them:

1. our own errors (`UpstreamRejected`, `BreakerOpen`, `InvalidInput`...);
2. connector faults (`ReplyError` for IMAP NO/BAD results, `ServerBye`,
   `ConnectionDropped`), read with the IMAP tables below;
3. the OS and TLS errors a socket raises (timeouts, refused, reset...);
4. the message text, for errors of unknown type (the list a mail client
   retries on:
   "invalid session ID", "session expired", "connection lost", ...).

Anything else fails fast and does not count: an unknown error is more likely
a bug in the caller's operation than a sick upstream, and retrying a bug only
hides it.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from enum import StrEnum

from ..exceptions import (
    BackendUnavailable,
    BreakerOpen,
    InvalidInput,
    UpstreamRejected,
    UpstreamUnavailable,
)
from ._faults import ConnectionDropped, ReplyError, ServerBye


class Action(StrEnum):
    """What the caller should do after a failed call.

    .. versionadded:: 0.1
    """

    #: Wait (backoff) and try again on the same connection.
    RETRY = "retry"
    #: Drop the connection, wait (backoff), open a new one and try again.
    RECONNECT = "reconnect"
    #: Do not retry: the same request would fail the same way.
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classification of one fault.

    .. versionadded:: 0.1
    """

    action: Action
    #: True if the fault says the upstream itself is unwell (feeds its breaker).
    counts_against_breaker: bool
    #: A short label for logs and records (``timeout``, ``auth_failed``...).
    reason: str

    @property
    def retryable(self) -> bool:
        """True unless the action is `Action.FAIL`."""
        return self.action is not Action.FAIL


def _v(action: Action, counts: bool, reason: str) -> Verdict:
    return Verdict(action, counts, reason)


R, C, F = Action.RETRY, Action.RECONNECT, Action.FAIL

#: Message fragments (lower case) for errors of unknown type; first match wins.
#: The first eight rows are the phrases IMAP clients commonly retry on.
TEXT_RULES: tuple[tuple[str, Verdict], ...] = (
    ("invalid session id", _v(C, False, "session_invalid")),
    ("session expired", _v(C, False, "session_expired")),
    ("command bye", _v(C, False, "server_bye")),
    ("connection lost", _v(C, True, "connection_lost")),
    ("connection reset", _v(C, True, "connection_reset")),
    ("broken pipe", _v(C, True, "broken_pipe")),
    ("eof occurred", _v(C, True, "eof")),
    ("timed out", _v(C, True, "timeout")),
    ("timeout", _v(C, True, "timeout")),
    ("too many simultaneous connections", _v(C, False, "throttled")),
    ("too many connections", _v(C, False, "throttled")),
    ("temporary failure", _v(C, True, "unavailable")),
    ("try again later", _v(C, True, "unavailable")),
    ("doesn't exist", _v(F, False, "nonexistent")),
    ("does not exist", _v(F, False, "nonexistent")),
    ("no such mailbox", _v(F, False, "nonexistent")),
    ("unknown mailbox", _v(F, False, "nonexistent")),
)

#: IMAP response codes (RFC 5530 and common extensions) on NO/BAD answers.
RESPONSE_CODES: dict[str, Verdict] = {
    "AUTHENTICATIONFAILED": _v(F, False, "auth_failed"),
    "AUTHORIZATIONFAILED": _v(F, False, "auth_failed"),
    "EXPIRED": _v(F, False, "credentials_expired"),
    "PRIVACYREQUIRED": _v(F, False, "tls_required"),
    "CONTACTADMIN": _v(F, False, "contact_admin"),
    "NOPERM": _v(F, False, "no_permission"),
    "NONEXISTENT": _v(F, False, "nonexistent"),
    "TRYCREATE": _v(F, False, "nonexistent"),
    "ALREADYEXISTS": _v(F, False, "already_exists"),
    "CANNOT": _v(F, False, "cannot"),
    "CLIENTBUG": _v(F, False, "client_bug"),
    "OVERQUOTA": _v(F, False, "over_quota"),
    "LIMIT": _v(F, False, "limit"),
    "UNAVAILABLE": _v(C, True, "unavailable"),
    "SERVERBUG": _v(R, True, "server_bug"),
    "CORRUPTION": _v(R, True, "server_bug"),
    "INUSE": _v(R, False, "in_use"),
    "EXPUNGEISSUED": _v(R, False, "in_use"),
    "THROTTLED": _v(C, False, "throttled"),
}

_CODE = re.compile(r"^\[([A-Za-z-]+)")
_AUTH_COMMANDS = frozenset({"LOGIN", "AUTHENTICATE", "XOAUTH2"})


def classify_reply(command: str, status: str, text: str) -> Verdict | None:
    """Classify one IMAP answer; None when it is a success (``OK``, ``PREAUTH``).

    The response code in brackets decides first, then the text (known phrases,
    "doesn't exist"...), then the command: a refused LOGIN is bad credentials,
    a ``BAD`` is a malformed command, any other ``NO`` is a refusal.

    .. versionadded:: 0.1
    """
    status = status.upper()
    if status in ("OK", "PREAUTH"):
        return None
    match = _CODE.match(text.strip())
    if match and match.group(1).upper() in RESPONSE_CODES:
        return RESPONSE_CODES[match.group(1).upper()]
    by_text = classify_text(text)
    if by_text is not None:
        return by_text
    if status == "BYE":
        return _v(C, False, "server_bye")
    if command.upper() in _AUTH_COMMANDS:
        return _v(F, False, "auth_failed")
    if status == "BAD":
        return _v(F, False, "bad_command")
    return _v(F, False, "refused")


def classify_text(text: str) -> Verdict | None:
    """Classify by message text alone (`TEXT_RULES`); None when nothing matches.

    .. versionadded:: 0.1
    """
    lowered = text.lower()
    for fragment, verdict in TEXT_RULES:
        if fragment in lowered:
            return verdict
    return None


def _classify_own(exc: BaseException) -> Verdict | None:
    if isinstance(exc, BreakerOpen):
        return _v(F, False, "breaker_open")
    if isinstance(exc, UpstreamRejected):
        return _v(F, False, exc.reason or "rejected")
    if isinstance(exc, UpstreamUnavailable):
        return _v(C, True, exc.reason or "unavailable")
    if isinstance(exc, BackendUnavailable):
        # Redis, not the upstream: the caller sees the store's own error.
        return _v(F, False, "backend_unavailable")
    if isinstance(exc, InvalidInput | ValueError | TypeError):
        return _v(F, False, "invalid_input")
    return None


def _classify_socket(exc: BaseException) -> Verdict | None:
    # Order matters: TimeoutError and the connection errors are OSErrors too.
    if isinstance(exc, TimeoutError):
        return _v(C, True, "timeout")
    if isinstance(exc, ConnectionRefusedError):
        return _v(C, True, "refused")
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError):
        return _v(C, True, "connection_reset")
    if isinstance(exc, BrokenPipeError):
        return _v(C, True, "broken_pipe")
    if isinstance(exc, ssl.SSLEOFError | EOFError):
        return _v(C, True, "eof")
    if isinstance(exc, ssl.SSLError):
        return _v(C, True, "tls_error")
    if isinstance(exc, ConnectionError | OSError):
        return _v(C, True, "network_error")
    return None


def classify(exc: BaseException) -> Verdict:
    """The verdict for a fault raised by an upstream call.

    Never called with `asyncio.CancelledError`: cancellation is not a fault
    and always propagates.

    .. versionadded:: 0.1
    """
    if isinstance(exc, ssl.SSLCertVerificationError):  # also a ValueError: check it first
        return _v(F, False, "tls_verify_failed")
    own = _classify_own(exc)
    if own is not None:
        return own
    if isinstance(exc, ReplyError):
        return classify_reply(exc.command, exc.status, exc.text) or _v(F, False, "refused")
    if isinstance(exc, ServerBye):
        # A BYE is polite whatever its text; only a stale-session text refines the label.
        by_text = classify_text(exc.text)
        if by_text is not None and by_text.action is C and not by_text.counts_against_breaker:
            return by_text
        return _v(C, False, "server_bye")
    if isinstance(exc, ConnectionDropped):
        return _v(C, True, "connection_lost")
    by_socket = _classify_socket(exc)
    if by_socket is not None:
        return by_socket
    by_text = classify_text(str(exc))
    if by_text is not None:
        return by_text
    return _v(F, False, "unexpected")
