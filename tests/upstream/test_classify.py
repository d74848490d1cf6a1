"""Fault classification: retry, reconnect or fail fast, and breaker counting (table-driven)."""

from __future__ import annotations

import errno
import ssl

import pytest

from sessionstore import BackendUnavailable, BreakerOpen, InvalidInput
from sessionstore.exceptions import UpstreamRejected, UpstreamUnavailable
from sessionstore.upstream import (
    RESPONSE_CODES,
    Action,
    ConnectionDropped,
    ReplyError,
    ServerBye,
    classify,
    classify_reply,
    classify_text,
)

R, C, F = Action.RETRY, Action.RECONNECT, Action.FAIL

# The mail client's list of retryable errors, as messages of errors of unknown type.
RETRYABLE_MESSAGES = [
    ("invalid session ID", C, False, "session_invalid"),
    ("Session expired, please log in again", C, False, "session_expired"),
    ("connection lost", C, True, "connection_lost"),
    ("Connection reset by peer", C, True, "connection_reset"),
    ("operation timeout", C, True, "timeout"),
    ("read timed out", C, True, "timeout"),
    ("[Errno 32] Broken pipe", C, True, "broken_pipe"),
    ("EOF occurred in violation of protocol", C, True, "eof"),
    ("unexpected command BYE from server", C, False, "server_bye"),
]


@pytest.mark.parametrize(("message", "action", "counts", "reason"), RETRYABLE_MESSAGES)
def test_known_retryable_messages_are_retryable(
    message: str, action: Action, counts: bool, reason: str
) -> None:
    """Every phrase of the known list reconnects; stale-session ones spare the breaker."""
    verdict = classify(RuntimeError(message))
    assert (verdict.action, verdict.counts_against_breaker, verdict.reason) == (
        action,
        counts,
        reason,
    )
    assert verdict.retryable


EXCEPTIONS = [
    (TimeoutError(), C, True, "timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), C, True, "refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), C, True, "connection_reset"),
    (BrokenPipeError(errno.EPIPE, "pipe"), C, True, "broken_pipe"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), C, True, "eof"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), F, False, "tls_verify_failed"),
    (OSError(errno.EHOSTUNREACH, "no route to host"), C, True, "network_error"),
    (EOFError(), C, True, "eof"),
    (ConnectionDropped("IMAP connection lost"), C, True, "connection_lost"),
    (ServerBye("Server shutting down."), C, False, "server_bye"),
    (ServerBye("Autologout; session expired"), C, False, "session_expired"),
    (ServerBye("Too many simultaneous connections"), C, False, "throttled"),
    (ServerBye("Connection timed out"), C, False, "server_bye"),
    (BreakerOpen("imap:host:993", 3.0), F, False, "breaker_open"),
    (UpstreamRejected("mail", "nope", reason="auth_failed"), F, False, "auth_failed"),
    (UpstreamUnavailable("mail", "down", reason="timeout"), C, True, "timeout"),
    (BackendUnavailable("redis down"), F, False, "backend_unavailable"),
    (InvalidInput("bad mailbox name"), F, False, "invalid_input"),
    (ValueError("NUL, CR and LF are not allowed"), F, False, "invalid_input"),
    (KeyError("oops"), F, False, "unexpected"),
    (RuntimeError("something odd"), F, False, "unexpected"),
]


@pytest.mark.parametrize(("exc", "action", "counts", "reason"), EXCEPTIONS)
def test_exceptions_are_classified_by_type(
    exc: BaseException, action: Action, counts: bool, reason: str
) -> None:
    """OS, TLS, connector and sessionstore errors get the documented verdict."""
    verdict = classify(exc)
    assert (verdict.action, verdict.counts_against_breaker, verdict.reason) == (
        action,
        counts,
        reason,
    )


REPLIES = [
    # aioimaplib returns these as results; the connector wraps them in ReplyError.
    ("LOGIN", "NO", "[AUTHENTICATIONFAILED] Authentication failed.", F, False, "auth_failed"),
    ("LOGIN", "NO", "Invalid credentials", F, False, "auth_failed"),
    ("LOGIN", "NO", "[UNAVAILABLE] Temporary authentication failure.", C, True, "unavailable"),
    ("LOGIN", "NO", "[ALERT] Too many simultaneous connections. (Failure)", C, False, "throttled"),
    ("LOGIN", "NO", "[EXPIRED] Password expired", F, False, "credentials_expired"),
    ("LOGIN", "NO", "[PRIVACYREQUIRED] Use TLS", F, False, "tls_required"),
    ("SELECT", "NO", "[NONEXISTENT] Unknown Mailbox: Nope", F, False, "nonexistent"),
    ("STATUS", "NO", "Mailbox doesn't exist: Nope (0.001 + 0.000 secs).", F, False, "nonexistent"),
    ("APPEND", "NO", "[TRYCREATE] Mailbox doesn't exist", F, False, "nonexistent"),
    ("APPEND", "NO", "[OVERQUOTA] Quota exceeded", F, False, "over_quota"),
    ("SELECT", "NO", "[NOPERM] Permission denied", F, False, "no_permission"),
    ("STORE", "NO", "[INUSE] Mailbox in use", R, False, "in_use"),
    ("FETCH", "NO", "[SERVERBUG] Internal error", R, True, "server_bug"),
    ("FETCH", "NO", "[THROTTLED] Slow down", C, False, "throttled"),
    ("SELECT", "NO", "invalid session ID", C, False, "session_invalid"),
    ("NOOP", "BAD", "Error in IMAP command received by server.", F, False, "bad_command"),
    ("SEARCH", "NO", "Something refused", F, False, "refused"),
    ("NOOP", "BYE", "Disconnected for inactivity.", C, False, "server_bye"),
]


@pytest.mark.parametrize(("command", "status", "text", "action", "counts", "reason"), REPLIES)
def test_imap_error_answers_are_classified(
    command: str, status: str, text: str, action: Action, counts: bool, reason: str
) -> None:
    """NO/BAD answers: response code first, then the text, then the command."""
    verdict = classify(ReplyError(command, status, text))
    assert (verdict.action, verdict.counts_against_breaker, verdict.reason) == (
        action,
        counts,
        reason,
    )
    assert classify_reply(command, status, text) == verdict


@pytest.mark.parametrize("status", ["OK", "ok", "PREAUTH"])
def test_ok_answers_are_not_faults(status: str) -> None:
    """A success status has no verdict."""
    assert classify_reply("NOOP", status, "NOOP completed") is None


def test_every_response_code_fails_fast_or_spares_the_breaker_when_account_specific() -> None:
    """Codes about one account or request never count against the host's breaker."""
    account_specific = {"AUTHENTICATIONFAILED", "NONEXISTENT", "NOPERM", "OVERQUOTA", "THROTTLED"}
    for code in account_specific:
        assert not RESPONSE_CODES[code].counts_against_breaker, code
    assert RESPONSE_CODES["UNAVAILABLE"].counts_against_breaker


def test_text_without_a_known_phrase_has_no_verdict() -> None:
    """classify_text answers None rather than guessing."""
    assert classify_text("everything is fine") is None
    assert classify_text("TIMED OUT") is not None


def test_reply_error_message_names_no_arguments() -> None:
    """A ReplyError shows the command name and the server text, never arguments."""
    error = ReplyError("LOGIN", "NO", "[AUTHENTICATIONFAILED] Authentication failed.")
    assert str(error) == "LOGIN answered NO: [AUTHENTICATIONFAILED] Authentication failed."
