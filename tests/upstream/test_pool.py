"""Pool logic with a scripted connector and breaker; records in a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from pydantic import SecretStr

from sessionstore import (
    BreakerOpen,
    InvalidInput,
    SessionClosed,
    SessionStore,
    SessionStoreError,
    UpstreamError,
)
from sessionstore.breaker import Outcome
from sessionstore.exceptions import UpstreamRejected, UpstreamUnavailable
from sessionstore.upstream import (
    ConnectionDropped,
    Credentials,
    ReplyError,
    ServerBye,
    UpstreamPool,
    UpstreamSettings,
    UpstreamState,
    set_testing,
)
from tests.conftest import RoundTrips
from tests.polling import eventually
from tests.upstream.conftest import ENV_PASSWORD_NAME, PASSWORD
from tests.upstream.fakes import (
    FakeClock,
    FakeConnector,
    FakeGates,
    RecordedJobs,
    failing,
    spec,
)

SETTINGS = UpstreamSettings.for_profile(
    "icloud",  # 3 attempts, 1 s initial delay, 30 s cap, 30 min sessions
    probe_idle_after=timedelta(seconds=60),
    record_interval=timedelta(seconds=30),
)


@dataclass
class Rig:
    pool: UpstreamPool
    connector: FakeConnector
    gates: FakeGates
    jobs: RecordedJobs
    clock: FakeClock
    store: SessionStore
    sleeps: list[float] = field(default_factory=list)

    async def session_with(self, *names: str) -> str:
        session = await self.store.create()
        for index, name in enumerate(names or ("mail",)):
            upstream = spec(name, host=f"host{index}.example.com")
            await self.pool.register(
                session.id, upstream, credential_ref=f"env:{ENV_PASSWORD_NAME}"
            )
        return session.id


@pytest.fixture
async def rig(store: SessionStore, credentials: Credentials) -> AsyncIterator[Rig]:
    """A pool over fakes, with a hand-moved clock and recorded backoff waits."""
    connector, gates, jobs, clock = FakeConnector(), FakeGates(), RecordedJobs(), FakeClock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    pool = UpstreamPool(
        store,
        connectors=[connector],
        credentials=credentials,
        settings=SETTINGS,
        gates=gates,
        reconnects=jobs,
        maintain_every=None,
        clock=clock,
        sleep=sleep,
    )
    async with pool:
        yield Rig(pool, connector, gates, jobs, clock, store, sleeps)


@pytest.mark.standalone
async def test_healthy_connection_is_reused_and_recorded_once(
    rig: Rig, round_trips: RoundTrips
) -> None:
    """Calls share one connection; after the first success no call touches Redis."""
    sid = await rig.session_with("mail")
    first = await rig.pool.run(sid, "mail", failing(then=1))
    round_trips.reset()
    for _ in range(5):
        served = await rig.pool.run(sid, "mail", failing(then=2))
    assert (first.value, served.value, served.upstream, served.attempts) == (1, 2, "mail", 1)
    assert rig.connector.opened == 1 and rig.connector.secrets == [PASSWORD]
    assert round_trips.total == 0
    record = await rig.pool.records.get(sid, "mail")
    assert record is not None and record.state is UpstreamState.CONNECTED
    assert record.last_success is not None


@pytest.mark.standalone
async def test_retry_keeps_the_connection_and_reconnect_replaces_it(rig: Rig) -> None:
    """RETRY verdicts reuse the connection; RECONNECT verdicts open a new one."""
    sid = await rig.session_with("mail")
    in_use = ReplyError("STORE", "NO", "[INUSE] busy")
    served = await rig.pool.run(sid, "mail", failing(in_use, in_use))
    assert (served.attempts, rig.connector.opened) == (3, 1)
    served = await rig.pool.run(sid, "mail", failing(TimeoutError("slow"), ServerBye("bye")))
    assert (served.attempts, rig.connector.opened) == (3, 3)
    assert rig.connector.connections[0].closed and rig.connector.connections[1].closed
    gate = rig.gates.gates["fake:host0.example.com:993"]
    assert gate.outcomes.count(Outcome.FAILURE) == 1  # the timeout; BYE and INUSE spare it


@pytest.mark.standalone
async def test_backoff_waits_follow_the_profile(rig: Rig) -> None:
    """Between attempts the pool waits per the policy: full jitter under 1 s, then 2 s."""
    set_testing(False)
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing(TimeoutError(), TimeoutError()))
    assert len(rig.sleeps) == 2
    assert 0 <= rig.sleeps[0] <= 1.0 and 0 <= rig.sleeps[1] <= 2.0


@pytest.mark.standalone
async def test_fail_fast_is_not_retried_and_spares_the_breaker(rig: Rig) -> None:
    """An unknown mailbox raises at once; the connection stays; the breaker ignores it."""
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing(then=0))
    missing = ReplyError("SELECT", "NO", "[NONEXISTENT] Unknown Mailbox: Nope")
    with pytest.raises(UpstreamRejected) as caught:
        await rig.pool.run(sid, "mail", failing(missing))
    assert caught.value.reason == "nonexistent"
    assert rig.connector.opened == 1 and not rig.connector.connections[0].closed
    gate = rig.gates.gates["fake:host0.example.com:993"]
    assert gate.outcomes == [Outcome.SUCCESS, Outcome.IGNORED]
    assert rig.jobs.asked == []


@pytest.mark.standalone
async def test_bad_credentials_mark_the_record_failed_without_a_job(rig: Rig) -> None:
    """A refused LOGIN fails fast, marks the record failed and queues no reconnect."""
    sid = await rig.session_with("mail")
    rig.connector.connect_faults.append(
        ReplyError("LOGIN", "NO", "[AUTHENTICATIONFAILED] Authentication failed.")
    )
    with pytest.raises(UpstreamRejected, match="auth_failed"):
        await rig.pool.run(sid, "mail", failing())
    record = await rig.pool.records.get(sid, "mail")
    assert record is not None and record.state is UpstreamState.FAILED
    assert record.last_error is not None and "AUTHENTICATIONFAILED" in record.last_error
    assert rig.jobs.asked == [] and rig.connector.opened == 0


@pytest.mark.standalone
async def test_spent_attempts_record_reconnecting_and_queue_a_job(rig: Rig) -> None:
    """After max attempts: UpstreamUnavailable, record reconnecting, one job asked."""
    sid = await rig.session_with("mail")
    lost = ConnectionDropped("IMAP connection lost")
    with pytest.raises(UpstreamUnavailable) as caught:
        await rig.pool.run(sid, "mail", failing(lost, lost, lost))
    assert (caught.value.attempts, caught.value.reason) == (3, "connection_lost")
    record = await rig.pool.records.get(sid, "mail")
    assert record is not None and record.state is UpstreamState.RECONNECTING
    assert record.attempts == 1 and record.next_attempt_at is not None
    assert record.last_error is not None and record.last_error.startswith("connection_lost")
    assert rig.jobs.asked == [(sid, "mail", 0.0)]  # zero: backoff testing mode
    served = await rig.pool.run(sid, "mail", failing(then="back"))
    record = await rig.pool.records.get(sid, "mail")
    assert served.value == "back"
    assert record is not None and record.state is UpstreamState.CONNECTED
    assert record.attempts == 0 and record.next_attempt_at is None


@pytest.mark.standalone
async def test_open_breaker_refuses_without_touching_the_upstream(rig: Rig) -> None:
    """Open or half-open: BreakerOpen at once; one job and one write per refusal period."""
    sid = await rig.session_with("mail")
    gate = await rig.gates.gate("fake:host0.example.com:993")
    gate.state = "half_open"  # probes are left to the reconnect job
    for _ in range(3):
        with pytest.raises(BreakerOpen) as caught:
            await rig.pool.run(sid, "mail", failing(then=1))
    assert caught.value.retry_after == 7.0
    assert rig.connector.opened == 0 and gate.admitted == 0
    assert rig.jobs.asked == [(sid, "mail", 7.0)]
    record = await rig.pool.records.get(sid, "mail")
    assert record is not None and record.state is UpstreamState.RECONNECTING
    rig.clock.advance(7.0)  # the breaker may have half-opened and failed again meanwhile
    with pytest.raises(BreakerOpen):
        await rig.pool.run(sid, "mail", failing(then=1))
    assert len(rig.jobs.asked) == 2
    gate.state = "closed"
    assert (await rig.pool.run(sid, "mail", failing(then=1))).value == 1


@pytest.mark.standalone
async def test_fallback_serves_when_the_primary_breaker_is_open(rig: Rig) -> None:
    """Fallbacks in order; the result names who served and who was skipped."""
    sid = await rig.session_with("mail", "backup", "third")
    (await rig.gates.gate("fake:host0.example.com:993")).state = "open"
    served = await rig.pool.run(sid, "mail", failing(then="v"), fallbacks=["backup", "third"])
    assert (served.value, served.upstream, served.fell_back) == ("v", "backup", True)
    assert served.skipped == (("mail", "breaker_open"),)


@pytest.mark.standalone
async def test_fallback_after_spent_attempts_and_when_all_fail(rig: Rig) -> None:
    """Spent attempts move on to the fallback; when every one fails, one error says so."""
    sid = await rig.session_with("mail", "backup")
    dead = ConnectionRefusedError(111, "refused")
    served = await rig.pool.run(
        sid, "mail", failing(dead, dead, dead, then="from backup"), fallbacks=["backup"]
    )
    assert (served.upstream, served.skipped) == ("backup", (("mail", "refused"),))
    with pytest.raises(UpstreamUnavailable, match="every upstream failed") as caught:
        await rig.pool.run(sid, "mail", failing(*[dead] * 6), fallbacks=["backup"])
    assert caught.value.reason == "all_failed" and caught.value.attempts == 6


@pytest.mark.standalone
async def test_fail_fast_on_the_primary_does_not_fall_back(rig: Rig) -> None:
    """Bad input would be bad on every upstream: no fallback is tried."""
    sid = await rig.session_with("mail", "backup")
    with pytest.raises(UpstreamRejected):
        await rig.pool.run(sid, "mail", failing(ValueError("bad")), fallbacks=["backup"])
    assert [c.spec.name for c in rig.connector.connections] == ["mail"]


@pytest.mark.standalone
async def test_connections_are_refreshed_before_the_maximum_age(rig: Rig) -> None:
    """iCloud drops sessions at 30 min: at 29 min the pool opens a fresh connection."""
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing())
    rig.clock.advance(SETTINGS.refresh_after.total_seconds() - 1)
    await rig.pool.run(sid, "mail", failing())
    assert rig.connector.opened == 1
    rig.clock.advance(1)
    await rig.pool.run(sid, "mail", failing())
    assert rig.connector.opened == 2 and rig.connector.connections[0].closed
    assert SETTINGS.refresh_after == timedelta(minutes=29)


@pytest.mark.standalone
async def test_idle_connections_are_probed_and_dead_ones_replaced(rig: Rig) -> None:
    """After idling the pool probes first; a failed probe or a known drop reopens quietly."""
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing())
    rig.clock.advance(61)
    rig.connector.probe_faults.append(TimeoutError("no NOOP answer"))
    served = await rig.pool.run(sid, "mail", failing())
    assert (rig.connector.probes, rig.connector.opened, served.attempts) == (1, 2, 1)
    rig.connector.connections[-1].alive = False  # e.g. conn_lost_cb fired while idle
    served = await rig.pool.run(sid, "mail", failing())
    assert (rig.connector.opened, served.attempts) == (3, 1)


@pytest.mark.standalone
async def test_maintenance_closes_connections_of_ended_sessions(rig: Rig) -> None:
    """Expired or deleted sessions take their in-process sockets with them."""
    kept, gone = await rig.session_with("mail"), await rig.session_with("mail")
    await rig.pool.run(kept, "mail", failing())
    await rig.pool.run(gone, "mail", failing())
    await rig.store.delete(gone)
    report = await rig.pool.maintain()
    assert (report.ended, report.aged, report.dead) == (1, 0, 0)
    assert rig.pool.open_connections() == [(kept, "mail")]
    assert rig.connector.connections[1].closed


@pytest.mark.standalone
async def test_a_write_refused_for_an_ended_session_closes_the_socket(rig: Rig) -> None:
    """Check on use: the session ended, so the call fails and its connection is closed."""
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing())
    await rig.store.delete(sid)
    dead = ConnectionRefusedError(111, "refused")
    with pytest.raises(SessionClosed):
        await rig.pool.run(sid, "mail", failing(dead, dead, dead))
    assert rig.pool.open_connections() == []


@pytest.mark.standalone
async def test_a_result_can_be_a_fault(rig: Rig) -> None:
    """A value the connector flags (IMAP NO as a result) is classified like a raise."""
    sid = await rig.session_with("mail")
    rig.connector.bad_results.add("NO-result")
    with pytest.raises(UpstreamRejected, match="nonexistent"):
        await rig.pool.run(sid, "mail", failing(then="NO-result"))


@pytest.mark.standalone
async def test_health_report_has_the_documented_fields(rig: Rig) -> None:
    """healthy, timestamp, host, port, response_time_ms, last_activity, error."""
    sid = await rig.session_with("mail")
    report = await rig.pool.health(sid, "mail")
    shape = report.as_dict()
    assert set(shape) == {
        "healthy",
        "timestamp",
        "host",
        "port",
        "response_time_ms",
        "last_activity",
        "error",
    }
    assert shape["healthy"] is True and shape["error"] is None and shape["port"] == 993
    assert shape["response_time_ms"] == 0.0  # the fake clock did not move
    record = await rig.pool.records.get(sid, "mail")
    assert record is not None and record.response_time_ms == 0.0
    rig.connector.probe_faults.append(ConnectionResetError(104, "reset"))
    bad = await rig.pool.health(sid, "mail")
    assert not bad.healthy and bad.error is not None and bad.error.startswith("connection_reset")


@pytest.mark.standalone
async def test_bad_calls_are_refused_before_any_io(rig: Rig) -> None:
    """Unknown upstream, repeated fallback, unknown kind: clear errors."""
    sid = await rig.session_with("mail")
    with pytest.raises(UpstreamError, match="not registered"):
        await rig.pool.run(sid, "nope", failing())
    with pytest.raises(InvalidInput, match="named twice"):
        await rig.pool.run(sid, "mail", failing(), fallbacks=["mail"])
    with pytest.raises(InvalidInput, match="no connector"):
        await rig.pool.register(sid, spec().model_copy(update={"kind": "pop3"}), secret=None)
    with pytest.raises(InvalidInput, match=r"pydantic\.SecretStr"):
        await rig.pool.register(sid, spec(), secret=PASSWORD)  # type: ignore[arg-type]


@pytest.mark.standalone
async def test_a_closed_pool_refuses_work_and_cannot_reopen(rig: Rig) -> None:
    """Lifecycle: closed is final."""
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing())
    await rig.pool.aclose()
    assert rig.connector.connections[0].closed
    with pytest.raises(SessionStoreError, match="closed"):
        await rig.pool.run(sid, "mail", failing())
    with pytest.raises(SessionStoreError, match="cannot be opened"):
        await rig.pool.open()


@pytest.mark.standalone
async def test_release_closes_and_marks_closed(rig: Rig) -> None:
    """release() closes this process's connection and records `closed`."""
    sid = await rig.session_with("mail")
    await rig.pool.run(sid, "mail", failing())
    assert await rig.pool.release(sid) == 1
    record = await rig.pool.records.get(sid, "mail")
    assert record is not None and record.state is UpstreamState.CLOSED
    assert rig.pool.open_connections() == []


@pytest.mark.standalone
async def test_secret_never_reaches_redis_in_plaintext(rig: Rig) -> None:
    """Encrypted registration: the raw hash holds a Fernet token, not the password."""
    session = await rig.store.create()
    await rig.pool.register(session.id, spec("enc"), secret=SecretStr(PASSWORD))
    raw = await rig.store.redis.hgetall(rig.store.session_keys(session.id).upstreams)
    assert PASSWORD not in str(raw) and '"fernet":"gAAAA' in raw["enc"]
    served = await rig.pool.run(session.id, "enc", failing(then=1))
    assert served.value == 1 and rig.connector.secrets[-1] == PASSWORD


@pytest.mark.standalone
async def test_session_events_close_connections_at_once(
    store: SessionStore, credentials: Credentials
) -> None:
    """With follow_events, a deleted or rotated session's socket closes without maintenance."""
    connector = FakeConnector()
    async with UpstreamPool(
        store,
        connectors=[connector],
        credentials=credentials,
        maintain_every=None,
        follow_events=True,
    ) as pool:
        sids = []
        for _ in range(3):
            session = await store.create()
            await pool.register(session.id, spec(), credential_ref=f"env:{ENV_PASSWORD_NAME}")
            await pool.run(session.id, "mail", failing())
            sids.append(session.id)
        await store.delete(sids[0])
        await store.rotate(sids[1])

        async def only_the_third_is_open() -> bool:
            return pool.open_connections() == [(sids[2], "mail")]

        await eventually(only_the_third_is_open)
        assert connector.connections[0].closed and connector.connections[1].closed
