"""The breaker's Redis side: each transition is one script, on standalone and on Cluster."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from sessionstore import BreakerAdmin, BreakerSettings, InvalidInput, KeySpace, RedisClient
from sessionstore.breaker import BreakerState
from sessionstore.breaker._policy import WindowCounts, trip_cause
from sessionstore.breaker._remote import BreakerScripts, PendingRecord
from tests.conftest import RoundTrips
from tests.polling import eventually

NAME = "imap:imap.example.com:993"


def make(redis: RedisClient, prefix: str, **overrides: object) -> BreakerScripts:
    fields: dict[str, object] = {"minimum_calls": 4, "failure_rate_threshold": 0.5}
    fields.update(overrides)
    return BreakerScripts(redis, KeySpace(prefix, 1), BreakerSettings.model_validate(fields))


async def trip(scripts: BreakerScripts, name: str = NAME) -> None:
    gen = (await scripts.read(name)).gen
    verdict, snapshot = await scripts.record(PendingRecord(name, gen, WindowCounts(10, 10, 0)))
    assert snapshot.state is BreakerState.OPEN, (verdict, snapshot)


async def first_probe(scripts: BreakerScripts, lease_id: str) -> None:
    """Wait (polling, with a deadline) until the open period has passed and `lease_id`
    is granted a probe."""

    async def granted() -> bool:
        return (await scripts.acquire(NAME, lease_id)).verdict == "probe"

    await eventually(granted, timeout=5)


async def test_window_trips_only_after_minimum_calls(redis: RedisClient, key_prefix: str) -> None:
    """3 failures of 3 calls do not trip (minimum 4); the 4th call does, once."""
    scripts = make(redis, key_prefix)
    for _ in range(3):
        verdict, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(1, 1, 0)))
        assert (verdict, snap.state) == ("counted", BreakerState.CLOSED)
    status = await scripts.read(NAME)
    assert (status.calls, status.failures) == (3, 3)
    verdict, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(1, 0, 0)))
    assert snap.state is BreakerState.OPEN and snap.cause == "failure_rate"
    assert snap.gen == 1 and snap.trips == 1
    assert snap.open_until_ms - snap.changed_at_ms == 30_000
    after = await scripts.read(NAME)
    assert after.calls == 0, "a new period starts with an empty window"
    events = await scripts.events(NAME, 10)
    assert [(e.kind, e.fields["to"]) for e in events] == [("transition", "open")]


async def test_healthy_calls_keep_it_closed(redis: RedisClient, key_prefix: str) -> None:
    """Below the failure-rate threshold the breaker stays closed however many calls."""
    scripts = make(redis, key_prefix)
    _, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(100, 49, 0)))
    assert snap.state is BreakerState.CLOSED
    assert (await scripts.read(NAME)).failure_rate == 0.49


async def test_slow_calls_trip_when_slow_rate_reaches_threshold(
    redis: RedisClient, key_prefix: str
) -> None:
    """With a slow-call duration set, mostly-slow successful calls trip it (slow_call_rate)."""
    scripts = make(
        redis, key_prefix, slow_call_duration=timedelta(seconds=1), slow_call_rate_threshold=0.6
    )
    _, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(10, 0, 5)))
    assert snap.state is BreakerState.CLOSED
    _, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(3, 0, 3)))  # 8 of 13
    assert snap.state is BreakerState.OPEN and snap.cause == "slow_call_rate"


async def test_slow_calls_do_not_count_without_a_slow_duration(
    redis: RedisClient, key_prefix: str
) -> None:
    """Slow counts are ignored by the rule when slow-call judgement is off."""
    scripts = make(redis, key_prefix)
    _, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(10, 0, 10)))
    assert snap.state is BreakerState.CLOSED


async def test_outcomes_of_an_older_generation_are_ignored(
    redis: RedisClient, key_prefix: str
) -> None:
    """After a reset (generation 1), outcomes observed in generation 0 do not count."""
    scripts = make(redis, key_prefix)
    await scripts.control(NAME, "reset", "tester", "")
    verdict, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(10, 10, 0)))
    assert verdict == "ignored" and snap.state is BreakerState.CLOSED and snap.gen == 1
    assert (await scripts.read(NAME)).calls == 0


async def test_old_buckets_slide_out_of_the_window(redis: RedisClient, key_prefix: str) -> None:
    """Failures older than the window no longer count (window of 2 buckets of 50 ms)."""
    scripts = make(redis, key_prefix, window=timedelta(milliseconds=100), window_buckets=2)
    await scripts.record(PendingRecord(NAME, 0, WindowCounts(3, 3, 0)))

    async def slid_out() -> bool:
        return (await scripts.read(NAME)).calls == 0

    await eventually(slid_out, timeout=5)
    _, snap = await scripts.record(PendingRecord(NAME, 0, WindowCounts(1, 1, 0)))
    assert snap.state is BreakerState.CLOSED, "only 1 call is in the window now"


async def test_open_refuses_until_its_duration_then_admits_exact_probes(
    redis: RedisClient, key_prefix: str
) -> None:
    """Open refuses with the time left; once elapsed, acquire moves it to half-open and
    grants exactly half_open_probes leases; the next is refused until the earliest deadline."""
    # Long enough that the "early" acquire is early even on a loaded machine.
    scripts = make(redis, key_prefix, open_duration=timedelta(seconds=1), half_open_probes=2)
    await trip(scripts)
    early = await scripts.acquire(NAME, "p0")
    assert early.verdict == "refused" and 0 < early.retry_after_ms <= 1000

    async def half_open() -> bool:
        return (await scripts.acquire(NAME, "p1")).verdict == "probe"

    await eventually(half_open, timeout=5)
    assert (await scripts.acquire(NAME, "p2")).verdict == "probe"
    third = await scripts.acquire(NAME, "p3")
    assert third.verdict == "refused" and third.snapshot.state is BreakerState.HALF_OPEN
    assert 0 < third.retry_after_ms <= 30_000
    status = await scripts.read(NAME)
    assert status.probes_in_flight == 2
    kinds = [e.fields.get("to") for e in reversed(await scripts.events(NAME, 10))]
    assert kinds == ["open", "half_open"], "open -> half_open happened exactly once"


async def test_successful_probes_close_and_a_failed_probe_reopens(
    redis: RedisClient, key_prefix: str
) -> None:
    """2 probes: one success keeps it half-open (and its slot used), the second closes it.
    In the next round one failure re-opens it at once."""
    scripts = make(redis, key_prefix, open_duration=timedelta(milliseconds=1), half_open_probes=2)
    await trip(scripts)
    await first_probe(scripts, "a")
    assert (await scripts.acquire(NAME, "b")).verdict == "probe"
    verdict, snap = await scripts.probe_done(NAME, "a", "success")
    assert (verdict, snap.state, snap.successes) == ("counted", BreakerState.HALF_OPEN, 1)
    assert (await scripts.acquire(NAME, "c")).verdict == "refused", "a success keeps its slot"
    verdict, snap = await scripts.probe_done(NAME, "b", "success")
    assert snap.state is BreakerState.CLOSED and snap.cause == "probes_succeeded"

    await trip(scripts)
    await first_probe(scripts, "d")
    verdict, snap = await scripts.probe_done(NAME, "d", "failure")
    assert snap.state is BreakerState.OPEN and snap.cause == "probe_failed"
    assert snap.trips == 3


async def test_cancelled_probe_returns_its_slot_and_stale_leases_are_lost(
    redis: RedisClient, key_prefix: str
) -> None:
    """'cancel' frees the slot at once; a lease from an earlier period counts for nothing."""
    scripts = make(redis, key_prefix, open_duration=timedelta(milliseconds=1), half_open_probes=1)
    await trip(scripts)
    await first_probe(scripts, "a")
    assert (await scripts.acquire(NAME, "b")).verdict == "refused"
    verdict, _ = await scripts.probe_done(NAME, "a", "cancel")
    assert verdict == "returned"
    assert (await scripts.acquire(NAME, "b")).verdict == "probe"
    await scripts.control(NAME, "reset", "tester", "")
    verdict, snap = await scripts.probe_done(NAME, "b", "failure")
    assert verdict == "lost" and snap.state is BreakerState.CLOSED


async def test_lapsed_probe_lease_is_reclaimed(redis: RedisClient, key_prefix: str) -> None:
    """A lease past its deadline frees its slot for the next acquire (event probe_reclaimed),
    and its late outcome is not counted."""
    scripts = make(
        redis,
        key_prefix,
        open_duration=timedelta(milliseconds=1),
        half_open_probes=1,
        probe_lease_ttl=timedelta(milliseconds=100),
    )
    await trip(scripts)
    await first_probe(scripts, "dead")

    async def reclaimed() -> bool:
        return (await scripts.acquire(NAME, "next")).verdict == "probe"

    await eventually(reclaimed, timeout=5)
    verdict, snap = await scripts.probe_done(NAME, "dead", "success")
    assert verdict == "lost" and snap.successes == 0
    assert "probe_reclaimed" in [e.kind for e in await scripts.events(NAME, 10)]


async def test_manual_actions_are_audited_announced_and_exclusive(
    redis: RedisClient, key_prefix: str
) -> None:
    """force_open refuses everything (no deadline); force_closed admits and ignores outcomes;
    reset closes; each is in the audit stream with who, why, from and to."""
    scripts = make(redis, key_prefix)
    snap = await scripts.control(NAME, "force_open", "alice@ops", "maintenance window")
    assert (snap.state, snap.actor, snap.reason) == (
        BreakerState.FORCED_OPEN,
        "alice@ops",
        "maintenance window",
    )
    refused = await scripts.acquire(NAME, "x")
    assert refused.verdict == "refused" and refused.retry_after_ms == -1
    snap = await scripts.control(NAME, "force_closed", "bob", "false alarm")
    assert (await scripts.acquire(NAME, "y")).verdict == "allowed"
    verdict, _ = await scripts.record(PendingRecord(NAME, snap.gen, WindowCounts(50, 50, 0)))
    assert verdict == "ignored"
    snap = await scripts.control(NAME, "reset", "carol", "")
    assert snap.state is BreakerState.CLOSED and snap.gen == 3
    audit = await scripts.audit(NAME, 10)
    assert [(a.action, a.actor, a.from_state, a.to_state) for a in audit] == [
        ("reset", "carol", BreakerState.FORCED_CLOSED, BreakerState.CLOSED),
        ("force_closed", "bob", BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED),
        ("force_open", "alice@ops", BreakerState.CLOSED, BreakerState.FORCED_OPEN),
    ]
    assert audit[2].reason == "maintenance window"


async def test_index_lists_names_noted_as_used(redis: RedisClient, key_prefix: str) -> None:
    """Names noted in the index are listed with their last use; nothing else is."""
    scripts = make(redis, key_prefix)
    assert await scripts.names() == []
    listed = await scripts.touch_index([NAME, "smtp:mail.example.com:587"])
    assert sorted(name for name, _ in listed) == sorted([NAME, "smtp:mail.example.com:587"])
    assert all(used > 0 for _, used in await scripts.names())


async def test_audit_stream_is_capped(redis: RedisClient, key_prefix: str) -> None:
    """The audit stream keeps exactly audit_maxlen entries, newest first."""
    scripts = make(redis, key_prefix, audit_maxlen=3)
    for i in range(5):
        await scripts.control(NAME, "reset", "tester", f"r{i}")
    audit = await scripts.audit(NAME, 10)
    assert [a.reason for a in audit] == ["r4", "r3", "r2"]


async def test_every_breaker_key_has_a_ttl(redis: RedisClient, key_prefix: str) -> None:
    """State, window, probes, events, audit and the index all expire or are bounded."""
    scripts = make(redis, key_prefix, open_duration=timedelta(milliseconds=1))
    await scripts.control(NAME, "reset", "tester", "")
    await scripts.record(PendingRecord(NAME, 1, WindowCounts(1, 0, 0)))
    await trip(scripts)
    await first_probe(scripts, "p")
    await scripts.record(PendingRecord(NAME, 0, WindowCounts(1, 0, 0)))
    await scripts.touch_index([NAME])
    keys = scripts.keys.breaker(NAME)
    for key in [*keys.ordered(), scripts.keys.breaker_index()]:
        if key == keys.window:
            continue  # dropped at the transition; checked below
        assert await redis.pttl(key) > 0, key
    await scripts.control(NAME, "reset", "tester", "")
    await scripts.record(PendingRecord(NAME, 4, WindowCounts(1, 0, 0)))
    assert 0 < await redis.pttl(keys.window) <= 70_000


async def test_read_of_an_unknown_breaker_is_closed_and_unknown(
    redis: RedisClient, key_prefix: str
) -> None:
    """A breaker nobody used reads closed, generation 0, and `known` is False."""
    status = await make(redis, key_prefix).read("never:used")
    assert status.state is BreakerState.CLOSED and status.gen == 0 and not status.known


@pytest.mark.parametrize("minimum", [1, 5])
async def test_lua_rule_matches_the_python_rule(
    redis: RedisClient, key_prefix: str, minimum: int
) -> None:
    """For a grid of window totals and thresholds, breaker_record.lua trips exactly when
    _policy.trip_cause says so, with the same cause."""
    grid = itertools.product([0.25, 0.5, 1 / 3, 1.0], [0.5, 0.8], range(0, 7), range(0, 7))
    for n, (rate, slow_rate, calls, failures) in enumerate(grid):
        failures = min(failures, calls)
        slow = calls - failures
        settings = {
            "minimum_calls": minimum,
            "failure_rate_threshold": rate,
            "slow_call_duration": timedelta(seconds=1),
            "slow_call_rate_threshold": slow_rate,
        }
        scripts = make(redis, key_prefix, **settings)
        name = f"grid:{n}"
        _, snap = await scripts.record(PendingRecord(name, 0, WindowCounts(calls, failures, slow)))
        expected = trip_cause(WindowCounts(calls, failures, slow), scripts.settings)
        if expected is None:
            assert snap.state is BreakerState.CLOSED, (rate, slow_rate, calls, failures)
        else:
            assert (snap.state, snap.cause) == (BreakerState.OPEN, expected)


async def test_no_history_asked_is_none_read(
    redis: RedisClient, key_prefix: str, round_trips: RoundTrips
) -> None:
    """`history` and `audit` with a count of 0 answer [] without a round trip (XREVRANGE
    refuses COUNT 0); a negative count is bad input."""
    admin = BreakerAdmin(redis, key_prefix=key_prefix)
    await admin.force_open(NAME, actor="ops", reason="test")
    round_trips.reset()
    assert await admin.history(NAME, 0) == [] and await admin.audit(NAME, 0) == []
    assert round_trips.total == 0
    assert len(await admin.audit(NAME, 5)) == 1
    with pytest.raises(InvalidInput):
        await admin.history(NAME, -1)
