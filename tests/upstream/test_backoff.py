"""Backoff bounds (hypothesis), the mail-client defaults, profiles, settings, testing switch."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionstore import InvalidInput, Settings
from sessionstore.upstream import (
    PROFILES,
    BackoffPolicy,
    Jitter,
    UpstreamSettings,
    get_profile,
    is_testing,
    set_testing,
)


@st.composite
def policies(draw: st.DrawFn) -> BackoffPolicy:
    initial = draw(st.floats(min_value=0.0, max_value=60.0))
    cap = draw(st.floats(min_value=initial, max_value=3600.0))
    return BackoffPolicy(
        max_attempts=draw(st.integers(min_value=1, max_value=100)),
        initial_delay=timedelta(seconds=initial),
        max_delay=timedelta(seconds=cap),
        multiplier=draw(st.floats(min_value=1.0, max_value=10.0)),
        jitter=draw(st.sampled_from(list(Jitter))),
    )


@given(policy=policies(), attempt=st.integers(min_value=1, max_value=10_000), seed=st.integers())
def test_every_delay_is_within_zero_and_the_cap(
    policy: BackoffPolicy, attempt: int, seed: int
) -> None:
    """Whatever the jitter and attempt number, 0 <= delay <= max_delay."""
    rng = random.Random(seed)
    cap = policy.max_delay.total_seconds()
    delay = policy.delay(attempt, rng=rng)
    assert 0.0 <= delay <= cap + 1e-9
    if policy.jitter is Jitter.FULL:
        assert delay <= policy.ceiling(attempt) + 1e-9
    if policy.jitter is Jitter.NONE:
        assert delay == policy.ceiling(attempt)


@given(policy=policies(), seed=st.integers())
def test_decorrelated_delays_stay_between_initial_and_cap(policy: BackoffPolicy, seed: int) -> None:
    """Decorrelated jitter never goes below the initial delay nor above the cap."""
    decorrelated = policy.model_copy(update={"jitter": Jitter.DECORRELATED})
    initial = policy.initial_delay.total_seconds()
    cap = policy.max_delay.total_seconds()
    waits = list(decorrelated.delays(rng=random.Random(seed)))
    assert len(waits) == policy.max_attempts - 1
    for wait in waits:
        assert initial - 1e-9 <= wait <= cap + 1e-9


@given(policy=policies())
def test_ceilings_never_shrink(policy: BackoffPolicy) -> None:
    """The un-jittered ceiling grows (or stays at the cap) with each attempt."""
    ceilings = [policy.ceiling(n) for n in range(1, 80)]
    assert ceilings == sorted(ceilings)
    assert ceilings[-1] <= policy.max_delay.total_seconds()


def test_icloud_numbers_without_jitter() -> None:
    """The iCloud profile: 1 s, 2 s, 4 s... capped at 30 s, 3 attempts."""
    icloud = get_profile("icloud")
    plain = icloud.backoff.model_copy(update={"jitter": Jitter.NONE})
    assert plain.max_attempts == 3
    assert [plain.ceiling(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert list(plain.delays()) == [1.0, 2.0]
    assert icloud.session_timeout == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("name", "attempts", "initial", "cap", "session_timeout"),
    [
        ("stable", 2, 0.5, 10, 3600),
        ("unreliable", 5, 2.0, 60, 900),
        ("icloud", 3, 1.0, 30, 1800),
    ],
)
def test_mail_profiles_carry_their_documented_numbers(
    name: str, attempts: int, initial: float, cap: float, session_timeout: int
) -> None:
    """stable, unreliable and icloud carry the numbers their docs promise."""
    profile = PROFILES[name]
    assert profile.backoff.max_attempts == attempts
    assert profile.backoff.initial_delay.total_seconds() == initial
    assert profile.backoff.max_delay.total_seconds() == cap
    assert profile.session_timeout.total_seconds() == session_timeout


def test_gmail_and_outlook_refresh_before_the_rfc_autologout() -> None:
    """Both refresh under RFC 3501's 30-minute minimum autologout and name a source."""
    for name in ("gmail", "outlook"):
        profile = get_profile(name)
        assert profile.session_timeout < timedelta(minutes=30)
        assert profile.max_connections_per_account is not None
        assert "ours" in profile.source  # retry numbers are ours, not the provider's


def test_unknown_profile_is_refused_with_the_known_names() -> None:
    """A typo names the profiles that exist."""
    with pytest.raises(InvalidInput, match="gmail, icloud, outlook, stable, unreliable"):
        get_profile("yahoo")


def test_settings_pick_a_profile_by_name_and_apply_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SESSIONSTORE_UPSTREAM_PROFILE chooses the numbers; single fields override them."""
    monkeypatch.setenv("SESSIONSTORE_UPSTREAM_PROFILE", "icloud")
    monkeypatch.setenv("SESSIONSTORE_UPSTREAM_MAX_ATTEMPTS", "6")
    monkeypatch.setenv("SESSIONSTORE_UPSTREAM_JITTER", "decorrelated")
    upstream = Settings().upstream
    assert upstream.profile.name == "icloud"
    assert upstream.backoff.max_attempts == 6
    assert upstream.backoff.jitter is Jitter.DECORRELATED
    assert upstream.backoff.max_delay == timedelta(seconds=30)
    assert upstream.max_connection_age == timedelta(minutes=30)
    assert upstream.refresh_after < upstream.max_connection_age
    assert upstream.reconnect_backoff.max_attempts == 10


def test_settings_refuse_an_unknown_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad profile name fails when settings are built, not at the first call."""
    monkeypatch.setenv("SESSIONSTORE_UPSTREAM_PROFILE", "yahoo")
    with pytest.raises(ValueError, match="unknown upstream profile"):
        Settings()


def test_secret_keys_are_split_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """SESSIONSTORE_SECRET_KEY holds comma-separated keys for rotation."""
    monkeypatch.setenv("SESSIONSTORE_SECRET_KEY", "new-key, old-key")
    keys = Settings().secret_keys()
    assert [k.get_secret_value() for k in keys] == ["new-key", "old-key"]
    assert "new-key" not in repr(Settings())


def test_bad_policies_are_refused() -> None:
    """A cap below the initial delay or zero attempts is bad input."""
    with pytest.raises(ValueError, match="initial_delay"):
        BackoffPolicy(initial_delay=timedelta(seconds=5), max_delay=timedelta(seconds=1))
    with pytest.raises(ValueError, match="max_attempts"):
        BackoffPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="call_timeout"):
        UpstreamSettings(call_timeout=timedelta(0))


def test_testing_switch_zeroes_waits_but_not_delays() -> None:
    """set_testing(True) (the autouse fixture) makes wait() zero; delay() stays pure."""
    policy = BackoffPolicy(jitter=Jitter.NONE, initial_delay=timedelta(seconds=3))
    assert is_testing()
    assert policy.wait(2) == 0.0
    assert policy.delay(2) == 6.0
    set_testing(False)
    assert policy.wait(2) == 6.0
