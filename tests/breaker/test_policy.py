"""The breaker's pure logic: the trip rule, local decisions, the local view, batching,
settings and input checks. No Redis here."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sessionstore import BreakerSettings, InvalidInput, Settings
from sessionstore._environment import ENVIRONMENT_VARIABLES
from sessionstore.breaker import BreakerSnapshot, BreakerState
from sessionstore.breaker._admin import check_actor, check_reason
from sessionstore.breaker._health import RedisHealth
from sessionstore.breaker._outcomes import OutcomeBuffer
from sessionstore.breaker._policy import (
    Verdict,
    WindowCounts,
    bucket_ms,
    decide,
    effective_state,
    is_slow,
    trip_cause,
)
from sessionstore.breaker._view import LocalView

S = BreakerSettings(minimum_calls=10, failure_rate_threshold=0.5)
SLOW = BreakerSettings(
    minimum_calls=10, slow_call_duration=timedelta(seconds=2), slow_call_rate_threshold=0.8
)


def snap(
    state: str = "closed", *, gen: int = 1, now_ms: int = 1_000, **extra: object
) -> BreakerSnapshot:
    return BreakerSnapshot.model_validate(
        {"name": "up:1", "state": state, "gen": gen, "now_ms": now_ms, **extra}
    )


# -- the trip rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "cause"),
    [
        (WindowCounts(9, 9, 0), None),  # below minimum_calls: no judgement
        (WindowCounts(10, 4, 0), None),
        (WindowCounts(10, 5, 0), "failure_rate"),  # exactly at the threshold trips
        (WindowCounts(1000, 499, 0), None),
        (WindowCounts(10, 0, 10), None),  # slow calls ignored without a slow duration
    ],
)
def test_trip_rule_failure_rate(counts: WindowCounts, cause: str | None) -> None:
    """Failure rate >= threshold after minimum_calls trips; nothing else does."""
    assert trip_cause(counts, S) == cause


@pytest.mark.parametrize(
    ("counts", "cause"),
    [
        (WindowCounts(10, 0, 7), None),
        (WindowCounts(10, 0, 8), "slow_call_rate"),
        (WindowCounts(10, 6, 8), "failure_rate"),  # failure rate is judged first
        (WindowCounts(9, 0, 9), None),
    ],
)
def test_trip_rule_slow_rate(counts: WindowCounts, cause: str | None) -> None:
    """With a slow duration, slow rate >= its threshold trips (cause slow_call_rate)."""
    assert trip_cause(counts, SLOW) == cause


def test_slow_means_at_least_the_slow_duration() -> None:
    """A call is slow from exactly slow_call_duration on, and never when it is unset."""
    assert is_slow(2.0, SLOW) and not is_slow(1.999, SLOW)
    assert not is_slow(3600.0, S)


def test_bucket_length_divides_the_window() -> None:
    """60 s in 6 buckets is 10 s per bucket."""
    assert bucket_ms(BreakerSettings()) == 10_000


# -- the local decision ---------------------------------------------------------


def _decide(state: BreakerState, **kw: object) -> tuple[Verdict, float]:
    args: dict[str, object] = {
        "now": 100.0,
        "retry_at": 0.0,
        "refused_until": 0.0,
        "redis_up": True,
        "settings": S,
    }
    args.update(kw)
    d = decide(state, **args)  # type: ignore[arg-type]
    return d.verdict, d.retry_after


def test_closed_admits_and_records() -> None:
    """Closed: admitted and recorded; no Redis needed to decide."""
    assert _decide(BreakerState.CLOSED) == (Verdict.ADMIT, 0.0)


def test_forced_states() -> None:
    """forced_closed admits unrecorded; forced_open refuses with one open period as hint."""
    assert _decide(BreakerState.FORCED_CLOSED)[0] is Verdict.ADMIT_UNRECORDED
    assert _decide(BreakerState.FORCED_OPEN) == (Verdict.REFUSE, 30.0)


def test_open_refuses_until_retry_at_then_probes() -> None:
    """Open refuses with the time left, then asks Redis for a probe."""
    assert _decide(BreakerState.OPEN, retry_at=112.5) == (Verdict.REFUSE, 12.5)
    assert _decide(BreakerState.OPEN, retry_at=100.0)[0] is Verdict.PROBE
    assert _decide(BreakerState.HALF_OPEN)[0] is Verdict.PROBE


def test_cached_half_open_refusal() -> None:
    """A cached refusal refuses locally until it runs out."""
    assert _decide(BreakerState.HALF_OPEN, refused_until=100.25) == (Verdict.REFUSE, 0.25)
    assert _decide(BreakerState.HALF_OPEN, refused_until=99.0)[0] is Verdict.PROBE


def test_redis_down_fail_open_follows_the_last_known_state() -> None:
    """fail_open: closed and half-open admit (unrecorded); open and forced_open still refuse."""
    down = {"redis_up": False}
    assert _decide(BreakerState.CLOSED, **down)[0] is Verdict.ADMIT_UNRECORDED
    assert _decide(BreakerState.HALF_OPEN, **down)[0] is Verdict.ADMIT_UNRECORDED
    assert _decide(BreakerState.OPEN, retry_at=150.0, **down)[0] is Verdict.REFUSE
    assert _decide(BreakerState.FORCED_OPEN, **down)[0] is Verdict.REFUSE


@given(
    state=st.sampled_from(list(BreakerState)),
    now=st.floats(0, 1e6),
    retry_at=st.floats(0, 1e6),
    refused_until=st.floats(0, 1e6),
    redis_up=st.booleans(),
    policy=st.sampled_from(["fail_open", "fail_closed"]),
)
def test_decision_invariants(
    state: BreakerState,
    now: float,
    retry_at: float,
    refused_until: float,
    redis_up: bool,
    policy: str,
) -> None:
    """Whatever the inputs: only a closed breaker with Redis up records; fail_closed with
    Redis down always refuses; forced_open always refuses; refusals have a positive hint;
    a probe is only asked for with Redis up."""
    settings = BreakerSettings(redis_down_policy=policy)  # type: ignore[arg-type]
    d = decide(
        state,
        now=now,
        retry_at=retry_at,
        refused_until=refused_until,
        redis_up=redis_up,
        settings=settings,
    )
    if d.verdict is Verdict.ADMIT:
        assert state is BreakerState.CLOSED and redis_up
    if d.verdict is Verdict.PROBE:
        assert redis_up and state in (BreakerState.OPEN, BreakerState.HALF_OPEN)
    if not redis_up and policy == "fail_closed":
        assert d.verdict is Verdict.REFUSE
    if state is BreakerState.FORCED_OPEN:
        assert d.verdict is Verdict.REFUSE
    if d.verdict is Verdict.REFUSE:
        assert d.retry_after > 0


# -- the local view ---------------------------------------------------------------


def test_view_turns_redis_deadline_into_local_monotonic_time() -> None:
    """open_until is read relative to the snapshot's own Redis time, never the local clock."""
    s = snap("open", now_ms=5_000_000, open_until_ms=5_030_000)
    view = LocalView(s, received=7.0, confirmed=True)
    assert view.retry_at == 37.0
    assert view.state(36.9) is BreakerState.OPEN
    assert view.state(37.0) is BreakerState.HALF_OPEN
    assert effective_state(BreakerState.CLOSED, now=1e9, retry_at=0) is BreakerState.CLOSED


def test_view_takes_newer_snapshots_only_and_reports_state_changes() -> None:
    """Older snapshots lose; a same-state refresh is taken but is no change; a new
    generation clears a cached refusal."""
    view = LocalView(snap(gen=2, now_ms=2_000), received=1.0, confirmed=True)
    view.refuse_until(50.0)
    assert not view.apply(snap("open", gen=1, now_ms=1_500), received=2.0)
    assert view.snapshot.gen == 2
    assert not view.apply(snap(gen=2, now_ms=2_500), received=3.0)
    assert view.confirmed_at == 3.0 and view.refused_until == 50.0
    assert view.apply(snap("forced_open", gen=3, now_ms=2_600), received=4.0)
    assert view.refused_until == 0.0 and view.state(4.0) is BreakerState.FORCED_OPEN


def test_a_later_generation_wins_even_with_an_earlier_redis_time() -> None:
    """After a failover to a Redis whose clock is behind, transitions still apply; and a
    breaker whose keys were lost (generation 0, later time) is learned anew."""
    view = LocalView(snap(gen=5, now_ms=10_000), received=1.0, confirmed=True)
    assert view.apply(snap("open", gen=6, now_ms=9_000, open_until_ms=39_000), received=2.0)
    assert view.snapshot.gen == 6 and view.retry_at == 32.0
    assert not view.apply(snap(gen=5, now_ms=8_500), received=3.0), "a stale push loses"
    assert not view.apply(snap(gen=5, now_ms=9_000), received=3.0), "same ms, older gen loses"
    assert view.apply(snap(gen=0, now_ms=20_000), received=4.0)
    assert view.state(4.0) is BreakerState.CLOSED


def test_unconfirmed_view_is_stale_at_once() -> None:
    """A placeholder view (Redis down at registration) is due for a poll immediately."""
    view = LocalView(snap(now_ms=0, gen=0), received=10.0, confirmed=False)
    assert view.is_stale(10.0, 0.5)
    fresh = LocalView(snap(), received=10.0, confirmed=True)
    assert not fresh.is_stale(10.4, 0.5) and fresh.is_stale(10.5, 0.5)


# -- batching -------------------------------------------------------------------------


def test_outcome_buffer_groups_by_breaker_and_generation() -> None:
    """Counts are kept per (breaker, generation); take() returns them and empties the buffer."""
    buffer = OutcomeBuffer()
    buffer.add("a", 1, failure=True, slow=False)
    buffer.add("a", 1, failure=False, slow=True)
    buffer.add("a", 2, failure=True, slow=True)
    buffer.add("b", 1, failure=False, slow=False)
    assert buffer.size == 4
    items = {(i.name, i.gen): i.counts for i in buffer.take()}
    assert items == {
        ("a", 1): WindowCounts(2, 1, 1),
        ("a", 2): WindowCounts(1, 1, 1),
        ("b", 1): WindowCounts(1, 0, 0),
    }
    assert buffer.size == 0 and buffer.take() == []


# -- settings and input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 1.5},
        {"minimum_calls": 0},
        {"half_open_probes": 0},
        {"open_duration": timedelta(0)},
        {"slow_call_duration": timedelta(0)},
        {"record_flush_interval": timedelta(seconds=-1)},
        {"window": timedelta(milliseconds=3), "window_buckets": 6},
        {"redis_down_policy": "maybe"},
    ],
)
def test_bad_breaker_settings_are_refused(bad: dict[str, object]) -> None:
    """Out-of-range breaker settings fail validation, naming the field."""
    with pytest.raises(ValidationError):
        BreakerSettings.model_validate(bad)


def test_env_settings_build_the_frozen_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every BreakerSettings field has a SESSIONSTORE_BREAKER_* twin; seconds and ISO 8601
    both work; an empty slow duration turns slow judgement off."""
    twins = {f"SESSIONSTORE_BREAKER_{n.upper()}" for n in BreakerSettings.model_fields}
    assert twins <= set(ENVIRONMENT_VARIABLES)
    monkeypatch.setenv("SESSIONSTORE_BREAKER_MINIMUM_CALLS", "7")
    monkeypatch.setenv("SESSIONSTORE_BREAKER_OPEN_DURATION", "2.5")
    monkeypatch.setenv("SESSIONSTORE_BREAKER_WINDOW", "PT2M")
    monkeypatch.setenv("SESSIONSTORE_BREAKER_SLOW_CALL_DURATION", "")
    monkeypatch.setenv("SESSIONSTORE_BREAKER_REDIS_DOWN_POLICY", "fail_closed")
    built = Settings().breaker
    assert built.minimum_calls == 7
    assert built.open_duration == timedelta(seconds=2.5)
    assert built.window == timedelta(minutes=2)
    assert built.slow_call_duration is None
    assert built.redis_down_policy == "fail_closed"
    with pytest.raises(ValidationError):
        built.minimum_calls = 3  # type: ignore[misc]


def test_actor_and_reason_checks() -> None:
    """Actors and reasons are printable and bounded; a reason can be required."""
    assert check_actor("alice@ops-host") == "alice@ops-host"
    assert check_reason("maintenance: upgrading dovecot", required=True)
    assert check_reason("", required=False) == ""
    for bad_actor in ["", "x" * 129, "a\nb", 3]:
        with pytest.raises(InvalidInput):
            check_actor(bad_actor)
    for bad_reason in ["x" * 501, "line\nbreak", None]:
        with pytest.raises(InvalidInput):
            check_reason(bad_reason, required=False)
    with pytest.raises(InvalidInput):
        check_reason("   ", required=True)


# -- outage logging --------------------------------------------------------------------


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    """100 failures log one WARNING; the first success logs one INFO with the dropped count."""
    health = RedisHealth("fail_open")
    with caplog.at_level(logging.INFO, logger="sessionstore.breaker"):
        for _ in range(100):
            health.failed(ConnectionError("refused"))
            health.dropped(2)
        assert not health.reachable and health.down_since is not None
        for _ in range(10):
            health.ok()
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == ["WARNING", "INFO"]
    assert "fail_open" in records[0][1]
    assert "200 outcomes" in records[1][1]
    assert health.reachable and health.down_since is None
    assert health.last_error == "ConnectionError: refused"
