"""Breakers while Redis is down: the documented policy, one log line per outage, a
health report, and recovery by themselves when Redis returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from sessionstore import (
    BreakerOpen,
    BreakerSettings,
    RedisClient,
    RedisSettings,
    create_client,
)
from sessionstore.breaker import AttemptKind, BreakerRegistry, BreakerState
from sessionstore.testing import LocalRedis
from tests.polling import eventually

#: Far above a fast failure, far below a hang.
DEADLINE = 10.0
BOUND = timedelta(milliseconds=400)


@pytest.fixture
async def private() -> AsyncIterator[tuple[LocalRedis, RedisClient]]:
    """A Redis of this test's own, so it can be stopped and restarted on its port."""
    server = LocalRedis().start()
    client = create_client(
        RedisSettings.from_dsn(
            server.url,
            connect_timeout=timedelta(milliseconds=300),
            socket_timeout=timedelta(milliseconds=300),
        )
    )
    try:
        yield server, client
    finally:
        await client.aclose()
        server.stop()


def _registry(client: RedisClient, **overrides: Any) -> BreakerRegistry:
    push = overrides.pop("push", True)
    fields: dict[str, Any] = {
        "minimum_calls": 4,
        "staleness_bound": BOUND,
        "record_flush_interval": timedelta(0),
    }
    fields.update(overrides)
    return BreakerRegistry(
        client, BreakerSettings.model_validate(fields), key_prefix="down", push=push
    )


async def _until(check: Any) -> None:
    async def probe() -> bool:
        return bool(check())

    await eventually(probe, timeout=DEADLINE)


def _breaker_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sessionstore.breaker" and r.levelno == level
    ]


async def test_fail_open_admits_calls_keeps_isolation_and_recovers(
    private: tuple[LocalRedis, RedisClient], caplog: pytest.LogCaptureFixture
) -> None:
    """fail_open: while Redis is stopped, closed breakers admit (unrecorded), a forced-open
    one still refuses, a breaker first used during the outage admits; one WARNING for the
    whole outage, one INFO at its end; recording and push resume by themselves."""
    server, client = private
    caplog.set_level(logging.INFO, logger="sessionstore.breaker")
    async with _registry(client) as registry:
        await _until(lambda: registry.health().push_live)
        up = await registry.get("up:1")
        await registry.force_open("iso:1", actor="tester", reason="isolate")
        isolated = await registry.get("iso:1")

        server.stop(remove=False)
        await _until(lambda: not registry.health().redis_reachable)
        for _ in range(20):
            async with up.guard() as attempt:
                assert attempt.kind is AttemptKind.UNRECORDED
            await registry.refresh()
        with pytest.raises(BreakerOpen):
            await isolated.call(asyncio.sleep, 0)
        late = await asyncio.wait_for(registry.get("late:1"), DEADLINE)
        assert await late.call(asyncio.sleep, 0, "served") == "served"
        health = registry.health()
        assert health.down_since is not None and health.last_error
        assert not health.push_live

        server.start()  # same port; the data is gone (no persistence)
        await _until(lambda: registry.health().redis_reachable and registry.health().push_live)
        attempt = await up.acquire()
        assert attempt.kind is AttemptKind.RECORDED
        await attempt.finish()
        assert (await registry.admin.status("up:1")).calls == 1
    warnings = _breaker_logs(caplog, logging.WARNING)
    assert len(warnings) == 1 and "fail_open" in warnings[0]
    assert len([m for m in _breaker_logs(caplog, logging.INFO) if "reachable again" in m]) == 1


async def test_fail_closed_refuses_during_the_outage_and_recovers(
    private: tuple[LocalRedis, RedisClient],
) -> None:
    """fail_closed: every guarded call is refused (BreakerOpen, retry after half the
    staleness bound) until Redis answers again; then calls pass and are recorded."""
    server, client = private
    async with _registry(client, redis_down_policy="fail_closed") as registry:
        up = await registry.get("up:1")
        server.stop(remove=False)
        await _until(lambda: not registry.health().redis_reachable)
        for _ in range(5):
            with pytest.raises(BreakerOpen) as refused:
                await up.call(asyncio.sleep, 0)
            assert refused.value.retry_after == BOUND.total_seconds() / 2
        server.start()
        await _until(lambda: registry.health().redis_reachable)
        await up.call(asyncio.sleep, 0)
        assert up.state is BreakerState.CLOSED
        assert (await registry.admin.status("up:1")).calls == 1


async def test_a_failed_record_never_fails_the_guarded_call(
    private: tuple[LocalRedis, RedisClient],
) -> None:
    """Inline recording while Redis has just died: the call's own result stands, the
    outcome is counted as dropped, and Redis is marked down (no poller involved)."""
    server, client = private
    quiet = _registry(client, push=False, staleness_bound=timedelta(minutes=10))
    async with quiet as registry:
        up = await registry.get("up:1")
        server.stop(remove=False)
        result = await asyncio.wait_for(up.call(asyncio.sleep, 0, "ok"), DEADLINE)
        assert result == "ok"
        health = registry.health()
        assert not health.redis_reachable and health.outcomes_dropped == 1
        async with up.guard() as attempt:
            assert attempt.kind is AttemptKind.UNRECORDED
