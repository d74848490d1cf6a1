"""Fixtures for upstream tests: a real Dovecot IMAP server, credentials, pools."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from arq.worker import Worker
from pydantic import SecretStr

from sessionstore import (
    SessionStore,
    Settings,
)
from sessionstore.upstream import (
    Credentials,
    EnvCredentials,
    SecretBox,
    UpstreamPool,
    UpstreamSettings,
    UpstreamSpec,
)
from tests.upstream.dovecot import Dovecot, dovecot_binary

PASSWORD = 'pa"ss w0rd'  # needs IMAP quoting: aioimaplib's own log scrub misses it
ENV_PASSWORD_NAME = "TEST_IMAP_PASSWORD"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A private Dovecot with user ``testuser`` (3 messages in INBOX), stopped by pid."""
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    server = Dovecot({"testuser": PASSWORD, "other": "other-secret"})
    server.deliver("testuser", 3)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def tls_dovecot() -> Iterator[Dovecot]:
    """Like `dovecot`, also serving IMAPS (implicit TLS) with a self-signed certificate."""
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    server = Dovecot({"testuser": PASSWORD}, tls=True)
    server.deliver("testuser", 3)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def secret_key() -> str:
    """A fresh Fernet key."""
    return SecretBox.generate_key()


@pytest.fixture
def credentials(secret_key: str) -> Credentials:
    """Env references (from a fake environment) and Fernet encryption."""
    return Credentials(
        providers=[EnvCredentials({ENV_PASSWORD_NAME: PASSWORD})],
        box=SecretBox([SecretStr(secret_key)]),
    )


@pytest.fixture
def upstream_settings() -> UpstreamSettings:
    """The stable profile with short IMAP timeouts (Dovecot answers in milliseconds)."""
    return UpstreamSettings.for_profile(
        "stable",
        call_timeout=timedelta(seconds=5),
        connect_timeout=timedelta(seconds=10),
    )


def imap_spec(server: Dovecot, name: str = "mail", username: str = "testuser") -> UpstreamSpec:
    """The spec of a Dovecot account (plain IMAP on loopback)."""
    return UpstreamSpec(
        name=name, kind="imap", host="127.0.0.1", port=server.port, username=username, tls=False
    )


PoolFactory = Callable[..., UpstreamPool]


@pytest.fixture
def make_pool(
    store: SessionStore, credentials: Credentials, upstream_settings: UpstreamSettings
) -> PoolFactory:
    """``async with make_pool(**overrides) as pool``: the real IMAP connector, no breaker,
    no reconnect jobs, no maintenance task, unless overridden."""
    from sessionstore.upstream.imap import ImapConnector

    def make(**overrides: Any) -> UpstreamPool:
        options: dict[str, Any] = {
            "connectors": [ImapConnector.from_settings(upstream_settings)],
            "credentials": credentials,
            "settings": upstream_settings,
            "maintain_every": None,
        }
        return UpstreamPool(store, **(options | overrides))

    return make


@pytest.fixture
async def imap_pool(make_pool: PoolFactory) -> AsyncIterator[UpstreamPool]:
    """An open pool from `make_pool` with its defaults."""
    async with make_pool() as pool:
        yield pool


@pytest.fixture
async def replica(store: SessionStore, redis_url: str, secret_key: str) -> AsyncIterator[Any]:
    """A reference-server replica in-process (`tests.upstream.replicas`)."""
    from tests.upstream.replicas import replica_settings, running

    async with running(replica_settings(store, redis_url, secret_key)) as served:
        yield served


RunWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def run_fleet_worker() -> AsyncIterator[RunWorker]:
    """Run the fleet's real arq worker (``workers.settings``) in burst mode:
    ``await run_fleet_worker(settings, max_burst_jobs=1)``; closed after the test."""
    from arq.worker import create_worker

    from workers.settings import build_worker_settings

    started: list[Worker] = []

    async def run(settings: Settings, **options: Any) -> Worker:
        worker = create_worker(
            build_worker_settings(settings),
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
            **options,
        )
        started.append(worker)
        await worker.main()
        await worker.close()
        return worker

    yield run
    for worker in started:
        await worker.close()


def fleet_settings(store: SessionStore, redis_url: str, secret_key: str, **extra: Any) -> Settings:
    """Settings shared by a test's replica and worker: the store, its queue, the secret
    key; cron ticks daily, so only the jobs a test queues run in a burst."""
    daily = timedelta(days=1)
    fields: dict[str, Any] = {
        "sweep_interval": daily,
        "aggressive_sweep_interval": daily,
        "repair_interval": daily,
        "upstream_call_timeout": timedelta(seconds=5),
        **extra,
    }
    return Settings(
        redis_url=redis_url,
        key_prefix=store.settings.key_prefix,
        shards=store.settings.shards,
        secret_key=SecretStr(secret_key),
        **fields,
    )
