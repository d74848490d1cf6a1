"""Message metadata page by page (`ImapClient.get_emails_metadata_stream`) on a real Dovecot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from sessionstore import SessionStore
from sessionstore.exceptions import InvalidInput
from sessionstore.upstream import ImapClient, UpstreamPool
from sessionstore.upstream.imap import EmailMetadata, ImapConnection
from tests.upstream.conftest import ENV_PASSWORD_NAME, imap_spec
from tests.upstream.dovecot import Dovecot

pytestmark = [pytest.mark.imap, pytest.mark.standalone]


def _message(index: int) -> bytes:
    subject = f"=?utf-8?q?caf=C3=A9?= no. {index}"
    return (
        "From: Al Sender <al@example.com>\r\n"
        "To: Bo <bo@example.com>, cy@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Tue, 01 Dec 2026 09:{index:02d}:00 +0000\r\n"
        "\r\n"
        f"body {index}\r\n"
    ).encode()


async def _appended(pool: UpstreamPool, sid: str, count: int) -> None:
    """APPEND `count` messages (the 2nd one flagged) through the pool's connection."""

    async def append_all(conn: ImapConnection) -> None:
        for index in range(count):
            flags = "(\\Flagged)" if index == 1 else None
            await conn.command("append", _message(index), "INBOX", flags, None)

    await pool.run(sid, "mail", append_all, label="append")


async def _mail_session(store: SessionStore, pool: UpstreamPool, server: Dovecot) -> str:
    session = await store.create(user_id="testuser")
    await pool.register(session.id, imap_spec(server), credential_ref=f"env:{ENV_PASSWORD_NAME}")
    return session.id


async def test_metadata_pages_newest_first_with_every_field(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """Appended messages come back page by page, newest first, with uid, subject
    (RFC 2047 decoded), from, to, date, flags and size; reading never marks seen."""
    sid = await _mail_session(store, imap_pool, dovecot)
    await _appended(imap_pool, sid, 5)  # INBOX now holds 3 delivered + 5 appended
    client = ImapClient(imap_pool, sid)

    first = [m async for m in client.get_emails_metadata_stream(page=1, page_size=3)]
    second = [m async for m in client.get_emails_metadata_stream(page=2, page_size=3)]
    third = [m async for m in client.get_emails_metadata_stream(page=3, page_size=3)]
    beyond = [m async for m in client.get_emails_metadata_stream(page=4, page_size=3)]

    uids = [m.uid for m in first + second + third]
    assert uids == sorted(uids, reverse=True) and len(set(uids)) == 8
    assert [len(first), len(second), len(third), len(beyond)] == [3, 3, 2, 0]
    newest = first[0]
    assert isinstance(newest, EmailMetadata)
    assert newest.subject == "café no. 4"
    assert newest.sender == "Al Sender <al@example.com>"
    assert newest.to == ["bo@example.com", "cy@example.com"]
    assert newest.date == datetime(2026, 12, 1, 9, 4, tzinfo=UTC)
    assert newest.size == len(_message(4))
    assert "\\Seen" not in newest.flags
    flagged = [m for m in first + second if "\\Flagged" in m.flags]
    assert [m.subject for m in flagged] == ["café no. 1"]
    assert newest.model_dump(by_alias=True)["from"] == "Al Sender <al@example.com>"
    oldest = third[-1]
    assert oldest.subject == "test 0" and oldest.to == [] and oldest.date is None
    again = [m async for m in client.get_emails_metadata_stream(page=1, page_size=1)]
    assert "\\Seen" not in again[0].flags  # BODY.PEEK: listing marks nothing seen


async def test_metadata_stream_reconnects_after_a_kick(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """A BYE between two pages: the next page reconnects and is served (same retry)."""
    sid = await _mail_session(store, imap_pool, dovecot)
    client = ImapClient(imap_pool, sid)
    page_one = [m.uid async for m in client.get_emails_metadata_stream(1, 2)]
    first = imap_pool.entry(sid, "mail").connection
    assert "kicked" in await asyncio.to_thread(dovecot.kick, "testuser")
    page_two = [m.uid async for m in client.get_emails_metadata_stream(2, 2)]
    assert page_one == [3, 2] and page_two == [1]
    assert imap_pool.entry(sid, "mail").connection is not first


async def test_metadata_stream_refuses_bad_pages(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """Page 0 or an oversized page is refused before any IMAP traffic."""
    sid = await _mail_session(store, imap_pool, dovecot)
    client = ImapClient(imap_pool, sid)
    for page, size in [(0, 10), (1, 0), (1, 501)]:
        with pytest.raises(InvalidInput):
            _ = [m async for m in client.get_emails_metadata_stream(page, size)]
    assert imap_pool.open_connections() == []
