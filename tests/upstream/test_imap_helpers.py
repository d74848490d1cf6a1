"""Pure helpers of the IMAP connector: answers as faults, quoting, redaction, log scrub."""

from __future__ import annotations

import logging
from collections import namedtuple

import pytest
from pydantic import SecretStr

pytest.importorskip("aioimaplib")

from sessionstore.upstream import classify
from sessionstore.upstream.imap import ImapConnector, quote_mailbox, reply_fault

Response = namedtuple("Response", "result lines")  # aioimaplib's shape


def test_error_answers_become_faults_and_ok_answers_do_not() -> None:
    """NO/BAD results (as aioimaplib returns them) become ReplyError with the tagged text."""
    no = Response("NO", [b"[AUTHENTICATIONFAILED] Authentication failed."])
    fault = reply_fault("LOGIN", no)
    assert fault is not None and fault.status == "NO"
    assert classify(fault).reason == "auth_failed"
    assert reply_fault("NOOP", Response("OK", [b"NOOP completed."])) is None
    assert reply_fault("X", 42) is None  # not a response at all
    bad = reply_fault("SEARCH", Response("BAD", [b"Error in IMAP command"]))
    assert bad is not None and classify(bad).reason == "bad_command"


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("INBOX", "INBOX"), ("Sent Items", '"Sent Items"'), ('We"ird', '"We\\"ird"'), ("", '""')],
)
def test_mailbox_names_are_quoted_when_needed(name: str, quoted: str) -> None:
    """Names with spaces or specials are sent as quoted strings."""
    assert quote_mailbox(name) == quoted


def test_redaction_masks_the_bare_and_quoted_password() -> None:
    """Both forms of the password disappear from an error text."""
    connector = ImapConnector()
    secret = SecretStr('pa"ss')
    text = connector.redact('LOGIN bob "pa\\"ss" failed; pa"ss', secret)
    assert text == "LOGIN bob *** failed; ***"


def test_login_lines_are_scrubbed_from_aioimaplib_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aioimaplib logs each sent line; the LOGIN arguments never reach a handler."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("aioimaplib.aioimaplib").debug("Sending : %s", b'AB1 LOGIN bob "pa\\"ss"\r\n')
    assert "pa" not in caplog.text.split("LOGIN", 1)[1]
    assert "LOGIN <redacted>" in caplog.text
