"""Server down, then back: the fleet breaker opens, reconnect jobs back off, it closes again.

Everything is real: Dovecot, Redis, the breaker registry of the replica and of
the worker, and the fleet's arq WorkerSettings in burst mode. Backoff waits
are zero (testing switch); the breaker's open period (0.5 s) is real, so the
worker's burst waits for the deferred job like a deployed worker would.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from arq.connections import create_pool
from pydantic import SecretStr

from sessionstore import BreakerOpen, SessionStore
from sessionstore.breaker import BreakerAdmin, BreakerRegistry, BreakerState
from sessionstore.exceptions import UpstreamRejected, UpstreamUnavailable
from sessionstore.upstream import (
    ArqReconnects,
    BreakerGates,
    ImapClient,
    UpstreamPool,
    UpstreamSpec,
    UpstreamState,
    credentials_for,
)
from sessionstore.upstream.imap import ImapConnection, ImapConnector
from tests.polling import eventually
from tests.upstream.conftest import PASSWORD, RunWorker, fleet_settings, imap_spec
from tests.upstream.dovecot import Dovecot
from workers.settings import build_worker_settings

# arq 0.28's Worker.close() calls redis-py's deprecated Redis.close(); that warning is arq's.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
    pytest.mark.imap,
    pytest.mark.slow,
]


class CountingImap(ImapConnector):
    """The IMAP connector, counting connection attempts (the replica's)."""

    connects = 0

    async def connect(self, spec: UpstreamSpec, secret: SecretStr) -> ImapConnection:
        CountingImap.connects += 1
        return await super().connect(spec, secret)


@pytest.mark.standalone
async def test_breaker_opens_jobs_back_off_and_recovery_closes_it(
    dovecot: Dovecot,
    store: SessionStore,
    redis_url: str,
    secret_key: str,
    run_fleet_worker: RunWorker,
) -> None:
    """Down: calls fail, the breaker opens, the replica stops calling, the job defers and
    its half-open probe fails. Back: the job's probe succeeds and closes the breaker."""
    settings = fleet_settings(
        store,
        redis_url,
        secret_key,
        breaker_minimum_calls=2,
        breaker_failure_rate_threshold=0.5,
        breaker_open_duration=timedelta(milliseconds=500),
        breaker_half_open_probes=1,
        breaker_record_flush_interval=timedelta(0),
    )
    upstream = settings.upstream
    spec = imap_spec(dovecot)
    queue = await create_pool(build_worker_settings(settings).redis_settings)  # type: ignore[attr-defined]
    admin = BreakerAdmin(store.redis, settings.breaker, key_prefix=settings.session.key_prefix)
    registry = BreakerRegistry(
        store.redis, settings.breaker, key_prefix=settings.session.key_prefix
    )
    CountingImap.connects = 0
    try:
        async with (
            registry,
            UpstreamPool(
                store,
                connectors=[CountingImap.from_settings(upstream)],
                credentials=credentials_for(settings, {}),
                settings=upstream,
                gates=BreakerGates(registry),
                reconnects=ArqReconnects.from_settings(queue, settings),
                maintain_every=None,
            ) as pool,
        ):
            session = await store.create()
            await pool.register(session.id, spec, secret=SecretStr(PASSWORD))
            client = ImapClient(pool, session.id)
            assert await client.get_email_count() == 3

            # Down: BYE (not counted), then refused (counted): 1 failure in 2 calls trips it.
            # If the dying link reset instead of saying BYE, that failure trips it and the
            # retry meets the open breaker: BreakerOpen rather than UpstreamUnavailable.
            dovecot.stop()
            with pytest.raises((UpstreamUnavailable, BreakerOpen)):
                await client.get_email_count()
            assert (await admin.status(spec.breaker_name)).state is BreakerState.OPEN
            connects = CountingImap.connects
            with pytest.raises(BreakerOpen):
                await client.get_email_count()
            assert CountingImap.connects == connects  # the open breaker spared the server
            record = await pool.records.get(session.id, "mail")
            assert record is not None and record.state is UpstreamState.RECONNECTING
            given_up = record.attempts  # 1 after spent attempts, 0 after a refusal

            # The job: deferred while open, then the half-open probe fails (server still down).
            runs = []
            for _ in range(6):  # one job run at a time, until the half-open probe has failed
                runs.append(await run_fleet_worker(settings, max_burst_jobs=1))
                record = await pool.records.get(session.id, "mail")
                if record is not None and record.attempts > given_up:
                    break
            assert all((w.jobs_retried, w.jobs_complete) == (1, 0) for w in runs)
            assert len(runs) >= 2  # at least one deferral while open, then the probe
            record = await pool.records.get(session.id, "mail")
            assert record is not None and record.state is UpstreamState.RECONNECTING
            assert record.attempts == given_up + 1  # the failed probe
            assert record.last_error is not None and record.last_error.startswith("refused")
            assert record.next_attempt_at is not None and record.last_error_at is not None
            assert record.next_attempt_at >= record.last_error_at
            status = await admin.status(spec.breaker_name)
            assert status.state is BreakerState.OPEN
            assert status.cause == "probe_failed"
            assert await queue.zcard(ArqReconnects.from_settings(queue, settings).queue_name) == 1

            # Back: the job's probe succeeds and closes the breaker for the whole fleet.
            dovecot.start()
            worker = await run_fleet_worker(settings)
            assert worker.jobs_complete == 1
            status = await admin.status(spec.breaker_name)
            assert status.state is BreakerState.CLOSED
            assert status.cause == "probes_succeeded"
            record = await pool.records.get(session.id, "mail")
            assert record is not None and record.state is UpstreamState.CONNECTED
            assert record.attempts == 0 and record.response_time_ms is not None

            async def replica_sees_closed() -> bool:
                return (await registry.get(spec.breaker_name)).state is BreakerState.CLOSED

            await eventually(replica_sees_closed, timeout=10)
            assert await client.get_email_count() == 3
    finally:
        await queue.aclose()


@pytest.mark.standalone
async def test_wrong_password_never_opens_the_fleet_breaker(
    dovecot: Dovecot, store: SessionStore, redis_url: str, secret_key: str
) -> None:
    """Bad credentials fail fast, one LOGIN per call, and the breaker records nothing."""
    settings = fleet_settings(
        store,
        redis_url,
        secret_key,
        breaker_minimum_calls=2,
        breaker_record_flush_interval=timedelta(0),
    )
    upstream = settings.upstream
    registry = BreakerRegistry(
        store.redis, settings.breaker, key_prefix=settings.session.key_prefix
    )
    admin = BreakerAdmin(store.redis, settings.breaker, key_prefix=settings.session.key_prefix)
    CountingImap.connects = 0
    async with (
        registry,
        UpstreamPool(
            store,
            connectors=[CountingImap.from_settings(upstream)],
            credentials=credentials_for(settings, {}),
            settings=upstream,
            gates=BreakerGates(registry),
            maintain_every=None,
        ) as pool,
    ):
        session = await store.create()
        wrong = imap_spec(dovecot, username="other")  # its password is not PASSWORD
        await pool.register(session.id, wrong, secret=SecretStr(PASSWORD))
        for _ in range(3):
            with pytest.raises(UpstreamRejected, match="auth_failed"):
                await ImapClient(pool, session.id).get_email_count()
        assert CountingImap.connects == 3  # not retried
        status = await admin.status(wrong.breaker_name)
        assert status.state is BreakerState.CLOSED
        assert (status.calls, status.failures) == (0, 0)
