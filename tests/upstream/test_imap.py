"""The IMAP connector and pool against a real Dovecot started by the tests."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from sessionstore import SessionStore
from sessionstore.exceptions import UpstreamRejected, UpstreamUnavailable
from sessionstore.upstream import (
    ImapClient,
    UpstreamPool,
    UpstreamSpec,
    UpstreamState,
)
from sessionstore.upstream.imap import ImapConnection, ImapConnector
from tests.polling import eventually
from tests.upstream.conftest import (
    ENV_PASSWORD_NAME,
    PASSWORD,
    PoolFactory,
    imap_spec,
)
from tests.upstream.dovecot import Dovecot
from tests.upstream.fakes import FakeGates, RecordedJobs

pytestmark = pytest.mark.imap


async def _session(store: SessionStore, pool: UpstreamPool, upstream: UpstreamSpec) -> str:
    session = await store.create(user_id="testuser")
    await pool.register(session.id, upstream, credential_ref=f"env:{ENV_PASSWORD_NAME}")
    return session.id


@pytest.mark.standalone
async def test_login_and_mail_operations(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """The managed email client: count, list and search work; the record says connected."""
    sid = await _session(store, imap_pool, imap_spec(dovecot))
    client = ImapClient(imap_pool, sid, "mail")
    assert await client.get_email_count("INBOX") == 3
    assert await client.list_mailboxes() == ["INBOX"]
    assert await client.search("ALL") == ["1", "2", "3"]
    record = await imap_pool.records.get(sid, "mail")
    assert record is not None and record.state is UpstreamState.CONNECTED
    assert imap_pool.open_connections() == [(sid, "mail")]
    await client.close()
    assert imap_pool.open_connections() == []


@pytest.mark.standalone
async def test_noop_health_reports_response_time(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """health_check sends NOOP, measures it and stores the figure in the record."""
    sid = await _session(store, imap_pool, imap_spec(dovecot))
    report = await ImapClient(imap_pool, sid).health_check()
    assert report.healthy and report.error is None
    assert report.host == "127.0.0.1" and report.port == dovecot.port
    assert report.response_time_ms is not None and report.response_time_ms > 0
    record = await imap_pool.records.get(sid, "mail")
    assert record is not None and record.response_time_ms == round(report.response_time_ms, 3)
    assert record.checked_at is not None


@pytest.mark.standalone
async def test_kick_sends_bye_and_the_next_call_reconnects(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """doveadm kick: the BYE push marks the connection dead; the next call reopens it."""
    sid = await _session(store, imap_pool, imap_spec(dovecot))
    client = ImapClient(imap_pool, sid)
    assert await client.get_email_count() == 3
    first = imap_pool.entry(sid, "mail").connection
    assert isinstance(first, ImapConnection) and first.alive
    assert "kicked" in dovecot.kick("testuser")

    async def dead() -> bool:
        return not first.alive

    await eventually(dead, timeout=10)
    served = await imap_pool.run(sid, "mail", lambda conn: conn.get_email_count(), label="count")
    assert served.value == 3 and served.attempts == 1  # reopening is upkeep, not a retry
    assert imap_pool.entry(sid, "mail").connection is not first


@pytest.mark.standalone
async def test_bye_during_a_command_reconnects_and_retries(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """A kick while a command runs: the BYE ends it at once, the pool retries on a new link."""
    sid = await _session(store, imap_pool, imap_spec(dovecot))
    kicked = False

    async def count_after_kick(conn: ImapConnection) -> int:
        nonlocal kicked
        if not kicked:
            kicked = True
            await asyncio.to_thread(dovecot.kick, "testuser")
            # The kicked IMAP process hangs up a moment after doveadm returns: commands
            # go on until one meets the BYE or the lost link (an error, not a hang).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await conn.noop()
            raise AssertionError("the connection still served 10 s after the kick")
        return await conn.get_email_count()

    served = await imap_pool.run(sid, "mail", count_after_kick, label="count")
    assert served.value == 3 and served.attempts == 2


@pytest.mark.standalone
async def test_wrong_password_fails_fast_without_retry_or_breaker_failure(
    dovecot: Dovecot,
    store: SessionStore,
    make_pool: PoolFactory,
) -> None:
    """AUTHENTICATIONFAILED: one login attempt, record failed, no job, breaker not fed."""
    gates, jobs = FakeGates(), RecordedJobs()
    async with make_pool(gates=gates, reconnects=jobs) as pool:
        session = await store.create()
        wrong = imap_spec(dovecot, username="other")  # its password is not PASSWORD
        await pool.register(session.id, wrong, credential_ref=f"env:{ENV_PASSWORD_NAME}")
        for _ in range(3):
            with pytest.raises(UpstreamRejected) as caught:
                await ImapClient(pool, session.id).get_email_count()
            assert caught.value.reason == "auth_failed"
        record = await pool.records.get(session.id, "mail")
        assert record is not None and record.state is UpstreamState.FAILED
        assert record.last_error is not None and "AUTHENTICATIONFAILED" in record.last_error
        assert jobs.asked == []
        gate = gates.gates[wrong.breaker_name]
        assert [str(o) for o in gate.outcomes] == ["ignored"] * 3  # one attempt per call
    assert dovecot.log().count("auth failed") + dovecot.log().count("Disconnected") >= 1


@pytest.mark.standalone
async def test_server_down_then_back(
    dovecot: Dovecot, store: SessionStore, make_pool: PoolFactory
) -> None:
    """Stopped server: refused, attempts spent, record reconnecting, a job asked; then back."""
    jobs = RecordedJobs()
    async with make_pool(reconnects=jobs) as pool:
        sid = await _session(store, pool, imap_spec(dovecot))
        client = ImapClient(pool, sid)
        assert await client.get_email_count() == 3
        dovecot.stop()
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.get_email_count()
        assert caught.value.reason == "refused"
        assert caught.value.attempts == pool.settings.backoff.max_attempts
        record = await pool.records.get(sid, "mail")
        assert record is not None and record.state is UpstreamState.RECONNECTING
        assert jobs.asked and jobs.asked[0][:2] == (sid, "mail")
        dovecot.start()
        assert await client.get_email_count() == 3
        record = await pool.records.get(sid, "mail")
        assert record is not None and record.state is UpstreamState.CONNECTED


@pytest.mark.standalone
async def test_unknown_mailbox_fails_fast_and_keeps_the_connection(
    dovecot: Dovecot, imap_pool: UpstreamPool, store: SessionStore
) -> None:
    """NO [NONEXISTENT] is bad input: raised at once, the session stays usable."""
    sid = await _session(store, imap_pool, imap_spec(dovecot))
    client = ImapClient(imap_pool, sid)
    assert await client.get_email_count() == 3
    conn = imap_pool.entry(sid, "mail").connection
    with pytest.raises(UpstreamRejected) as caught:
        await client.get_email_count("No Such Box")
    assert caught.value.reason == "nonexistent"
    assert imap_pool.entry(sid, "mail").connection is conn and conn.alive


@pytest.mark.standalone
async def test_imaps_with_the_servers_certificate_watches_the_link(
    tls_dovecot: Dovecot, store: SessionStore, make_pool: PoolFactory
) -> None:
    """Implicit TLS works, and a kick is seen at once (aioimaplib's IMAP4_SSL drops
    conn_lost_cb; the connector wires it on TLS too)."""
    assert tls_dovecot.certificate is not None
    trust = ssl.create_default_context(cafile=str(tls_dovecot.certificate))
    connector = ImapConnector(call_timeout=5, connect_timeout=10, ssl_context=trust)
    async with make_pool(connectors=[connector]) as pool:
        upstream = imap_spec(tls_dovecot).model_copy(
            update={"port": tls_dovecot.tls_port, "tls": True}
        )
        sid = await _session(store, pool, upstream)
        assert await ImapClient(pool, sid).get_email_count() == 3
        conn = pool.entry(sid, "mail").connection
        tls_dovecot.kick("testuser")

        async def dead() -> bool:
            return not conn.alive

        await eventually(dead, timeout=10)
        assert await ImapClient(pool, sid).get_email_count() == 3


@pytest.mark.standalone
async def test_untrusted_certificate_fails_fast(
    tls_dovecot: Dovecot, store: SessionStore, make_pool: PoolFactory
) -> None:
    """A certificate the system does not trust is a configuration error: no retry."""
    connects = 0

    class Counting(ImapConnector):
        async def connect(self, spec: UpstreamSpec, secret: SecretStr) -> ImapConnection:
            nonlocal connects
            connects += 1
            return await super().connect(spec, secret)

    async with make_pool(connectors=[Counting(call_timeout=5, connect_timeout=10)]) as pool:
        upstream = imap_spec(tls_dovecot).model_copy(
            update={"port": tls_dovecot.tls_port, "tls": True}
        )
        sid = await _session(store, pool, upstream)
        with pytest.raises(UpstreamRejected) as caught:
            await ImapClient(pool, sid).get_email_count()
        assert caught.value.reason == "tls_verify_failed"
        assert connects == 1


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that greets like IMAP and then never answers (a hung upstream)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1] silent\r\n")
        await writer.drain()
        try:
            await reader.read()  # swallow commands until the client goes away
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_every_call_is_bounded_by_a_timeout(silent_server: int) -> None:
    """An upstream that stops answering costs one timeout, never a hang.

    Dovecot always answers, so a silent TCP server plays the hung upstream.
    """
    connector = ImapConnector(call_timeout=0.3, connect_timeout=5)
    spec = UpstreamSpec(name="mail", host="127.0.0.1", port=silent_server, username="u", tls=False)
    with pytest.raises(TimeoutError, match=r"greeting got no answer within 0\.3s"):
        await connector.connect(spec, SecretStr("x"))


@pytest.mark.standalone
async def test_no_password_in_logs_or_records(
    dovecot: Dovecot,
    imap_pool: UpstreamPool,
    store: SessionStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DEBUG logs of sessionstore and aioimaplib, and the records, never hold the password."""
    caplog.set_level(logging.DEBUG)
    sid = await _session(store, imap_pool, imap_spec(dovecot))
    assert await ImapClient(imap_pool, sid).get_email_count() == 3
    other = await store.create()
    await imap_pool.register(
        other.id, imap_spec(dovecot, username="other"), credential_ref=f"env:{ENV_PASSWORD_NAME}"
    )
    with pytest.raises(UpstreamRejected):
        await ImapClient(imap_pool, other.id).get_email_count()
    assert "LOGIN" in caplog.text  # aioimaplib did log the command...
    for form in (PASSWORD, PASSWORD.replace('"', '\\"'), "w0rd"):
        assert form not in caplog.text  # ...but not its argument
    raw = await store.redis.hgetall(store.session_keys(other.id).upstreams)
    assert "w0rd" not in str(raw)
