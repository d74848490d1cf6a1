"""The reconnect job as the fleet's real arq WorkerSettings runs it (burst mode)."""

from __future__ import annotations

import pytest
from arq.connections import create_pool
from pydantic import SecretStr

from sessionstore import SessionStore, Settings
from sessionstore.exceptions import UpstreamUnavailable
from sessionstore.upstream import (
    ArqReconnects,
    ImapClient,
    UpstreamPool,
    UpstreamState,
    connectors_for,
    credentials_for,
    reconnect_job_name,
)
from tests.upstream.conftest import PASSWORD, RunWorker, fleet_settings, imap_spec
from tests.upstream.dovecot import Dovecot
from workers.context import job_name
from workers.settings import build_worker_settings

# arq 0.28's Worker.close() calls redis-py's deprecated Redis.close(); that warning is arq's.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


def test_the_fleet_registers_the_reconnect_job(redis_url: str) -> None:
    """WorkerSettings lists the job under the name the replicas enqueue."""
    settings = Settings(redis_url=redis_url, key_prefix="fleetcheck")
    names = [f.name for f in build_worker_settings(settings).functions]  # type: ignore[attr-defined]
    assert reconnect_job_name("fleetcheck") in names
    assert reconnect_job_name("fleetcheck") == job_name("fleetcheck", "reconnect_upstream")


@pytest.mark.standalone
async def test_a_failed_call_is_reconnected_by_the_fleet_worker(
    dovecot: Dovecot,
    store: SessionStore,
    redis_url: str,
    secret_key: str,
    run_fleet_worker: RunWorker,
) -> None:
    """Replica gives up while the server is down; once it is back, the worker reconnects.

    The replica encrypts the password with SESSIONSTORE_SECRET_KEY; the worker,
    built from the same settings, opens it: nothing secret travels in the job.
    """
    settings = fleet_settings(store, redis_url, secret_key)
    upstream = settings.upstream
    queue = await create_pool(build_worker_settings(settings).redis_settings)  # type: ignore[attr-defined]
    try:
        async with UpstreamPool(
            store,
            connectors=connectors_for(upstream),
            credentials=credentials_for(settings, {}),
            settings=upstream,
            reconnects=ArqReconnects.from_settings(queue, settings),
            maintain_every=None,
        ) as pool:
            session = await store.create()
            await pool.register(session.id, imap_spec(dovecot), secret=SecretStr(PASSWORD))
            dovecot.stop()
            with pytest.raises(UpstreamUnavailable):
                await ImapClient(pool, session.id).get_email_count()
            dovecot.start()
            await run_fleet_worker(settings)
            record = await pool.records.get(session.id, "mail")
            assert record is not None and record.state is UpstreamState.CONNECTED
            assert record.response_time_ms is not None
            assert await ImapClient(pool, session.id).get_email_count() == 3
    finally:
        await queue.aclose()
