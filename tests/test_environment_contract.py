"""The environment contract: every ``SESSIONSTORE_*`` name, its default, how it parses.

The table was generated from the reader before its fields moved into the
per-concept settings models, so it proves that the move changed no name, no
default and no parsed type. Change a row only together with the docs and a
note of the rename (with the old name still accepted).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from sessionstore import Settings
from sessionstore._environment import ENVIRONMENT_VARIABLES
from sessionstore.upstream import Jitter


class Secret(str):
    """Expected value of a secret setting (compared with its revealed text)."""


#: (variable, default, a valid sample text, what the sample parses to)
CONTRACT: list[tuple[str, object, str, object]] = [
    ("SESSIONSTORE_REDIS_URL", None, "90", "90"),
    ("SESSIONSTORE_QUEUE_REDIS_URL", None, "90", "90"),
    ("SESSIONSTORE_REDIS_CONNECT_TIMEOUT", timedelta(seconds=1), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_REDIS_SOCKET_TIMEOUT", timedelta(seconds=2), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_KEY_PREFIX", "ss", "90", "90"),
    ("SESSIONSTORE_SHARDS", 16, "90", 90),
    ("SESSIONSTORE_IDLE_TIMEOUT", timedelta(seconds=1800), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_ABSOLUTE_LIFETIME", timedelta(seconds=86400), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_EXPIRED_RETENTION", timedelta(seconds=86400), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_SWEEP_GRACE", timedelta(seconds=86400), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_MAX_METADATA_BYTES", 16384, "90", 90),
    ("SESSIONSTORE_MAX_ATTRIBUTE_BYTES", 65536, "90", 90),
    ("SESSIONSTORE_MAX_STATE_BYTES", 1048576, "90", 90),
    ("SESSIONSTORE_MAX_ATTRIBUTES", 256, "90", 90),
    ("SESSIONSTORE_MAX_REQUESTS_PER_SESSION", 32, "90", 90),
    ("SESSIONSTORE_MAX_REQUESTS_GLOBAL", 0, "90", 90),
    ("SESSIONSTORE_REQUEST_LEASE_TTL", timedelta(seconds=60), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_LOCK_TTL", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_EVENTS_MAXLEN", 10000, "90", 90),
    ("SESSIONSTORE_BREAKER_FAILURE_RATE_THRESHOLD", 0.5, "0.25", 0.25),
    ("SESSIONSTORE_BREAKER_MINIMUM_CALLS", 10, "90", 90),
    ("SESSIONSTORE_BREAKER_WINDOW", timedelta(seconds=60), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_BREAKER_WINDOW_BUCKETS", 6, "7", 7),
    ("SESSIONSTORE_BREAKER_SLOW_CALL_DURATION", None, "90", timedelta(seconds=90)),
    ("SESSIONSTORE_BREAKER_SLOW_CALL_RATE_THRESHOLD", 0.8, "0.25", 0.25),
    ("SESSIONSTORE_BREAKER_OPEN_DURATION", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_BREAKER_HALF_OPEN_PROBES", 3, "90", 90),
    ("SESSIONSTORE_BREAKER_PROBE_LEASE_TTL", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_BREAKER_STALENESS_BOUND", timedelta(seconds=1), "90", timedelta(seconds=90)),
    (
        "SESSIONSTORE_BREAKER_RECORD_FLUSH_INTERVAL",
        timedelta(seconds=0.02),
        "90",
        timedelta(seconds=90),
    ),
    ("SESSIONSTORE_BREAKER_REDIS_DOWN_POLICY", "fail_open", "fail_closed", "fail_closed"),
    ("SESSIONSTORE_BREAKER_EVENTS_MAXLEN", 1000, "90", 90),
    ("SESSIONSTORE_BREAKER_AUDIT_MAXLEN", 100, "90", 90),
    ("SESSIONSTORE_BREAKER_RETENTION", timedelta(seconds=604800), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_AGGRESSIVE_CLEANUP", False, "true", True),
    ("SESSIONSTORE_SWEEP_INTERVAL", timedelta(seconds=60), "30", timedelta(seconds=30)),
    ("SESSIONSTORE_AGGRESSIVE_SWEEP_INTERVAL", timedelta(seconds=10), "30", timedelta(seconds=30)),
    ("SESSIONSTORE_SWEEP_BATCH_SIZE", 500, "90", 90),
    ("SESSIONSTORE_SWEEP_MAX_PER_RUN", 50000, "4096", 4096),
    ("SESSIONSTORE_LONG_OVERDUE_AFTER", timedelta(seconds=3600), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_REPAIR_INTERVAL", timedelta(seconds=3600), "1800", timedelta(seconds=1800)),
    ("SESSIONSTORE_HEARTBEAT_INTERVAL", timedelta(seconds=10), "7", timedelta(seconds=7)),
    ("SESSIONSTORE_HEARTBEAT_TTL", timedelta(seconds=3600), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_WORKER_DEAD_AFTER", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_JOB_TIMEOUT", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_WORKER_ID", None, "90", "90"),
    ("SESSIONSTORE_QUEUE_NAME", None, "90", "90"),
    ("SESSIONSTORE_HEALTH_TOKEN", None, "90", Secret("90")),
    ("SESSIONSTORE_SERVICE_TOKENS", None, "90", Secret("90")),
    ("SESSIONSTORE_INSECURE_OPEN_MANAGEMENT", False, "true", True),
    ("SESSIONSTORE_SESSION_HEADER", "Mcp-Session-Id", "90", "90"),
    ("SESSIONSTORE_SESSION_COOKIE", "sessionstore", "90", "90"),
    ("SESSIONSTORE_COOKIE_SECRET", None, "90", Secret("90")),
    ("SESSIONSTORE_RENEW_EXPIRED_SESSIONS", False, "true", True),
    ("SESSIONSTORE_MAX_BODY_BYTES", 2097152, "4096", 4096),
    ("SESSIONSTORE_DRAIN_TIMEOUT", timedelta(seconds=10), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_REQUEST_REDIS_TIMEOUT", timedelta(seconds=0.75), "0.5", timedelta(seconds=0.5)),
    ("SESSIONSTORE_HEALTH_MAX_SWEEPER_LAG", timedelta(seconds=300), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_SERVER_HOST", "127.0.0.1", "90", "90"),
    ("SESSIONSTORE_SERVER_PORT", 8000, "90", 90),
    # Slow and abusive clients (docs/security.md).
    ("SESSIONSTORE_REQUEST_BODY_TIMEOUT", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_REQUEST_HEADER_TIMEOUT", timedelta(seconds=10), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_SERVER_LIMIT_CONCURRENCY", 1000, "90", 90),
    ("SESSIONSTORE_KEEP_ALIVE_TIMEOUT", timedelta(seconds=5), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_ADMIN_TOKEN", None, "90", Secret("90")),
    ("SESSIONSTORE_TRUSTED_PROXIES", "", "10.0.0.5,172.28.0.0/24", "10.0.0.5,172.28.0.0/24"),
    ("SESSIONSTORE_DEMO_ROUTES", False, "true", True),
    ("SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS", None, "90", "90"),
    ("SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS", None, "90", "90"),
    ("SESSIONSTORE_UPSTREAM_PROFILE", "stable", "gmail", "gmail"),
    # The profile overrides: unset means the profile's own number.
    ("SESSIONSTORE_UPSTREAM_MAX_ATTEMPTS", 2, "90", 90),
    ("SESSIONSTORE_UPSTREAM_INITIAL_DELAY", timedelta(seconds=0.5), "9", timedelta(seconds=9)),
    ("SESSIONSTORE_UPSTREAM_MAX_DELAY", timedelta(seconds=10), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_UPSTREAM_JITTER", Jitter.FULL, "none", Jitter.NONE),
    ("SESSIONSTORE_UPSTREAM_MAX_CONNECTION_AGE", timedelta(hours=1), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_UPSTREAM_CALL_TIMEOUT", timedelta(seconds=10), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_UPSTREAM_CONNECT_TIMEOUT", timedelta(seconds=10), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_UPSTREAM_PROBE_IDLE_AFTER", timedelta(seconds=60), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_UPSTREAM_RECORD_INTERVAL", timedelta(seconds=30), "90", timedelta(seconds=90)),
    ("SESSIONSTORE_UPSTREAM_RECONNECT_MAX_ATTEMPTS", 10, "90", 90),
    (
        "SESSIONSTORE_UPSTREAM_RECONNECT_MAX_DELAY",
        timedelta(seconds=300),
        "90",
        timedelta(seconds=90),
    ),
    ("SESSIONSTORE_UPSTREAM_CREDENTIALS_DIR", None, "90", "90"),
    ("SESSIONSTORE_SECRET_KEY", None, "90", Secret("90")),
]

#: Variables for which an empty value (``NAME=``, as compose passes unset ones) means unset.
EMPTY_MEANS_UNSET = [
    "SESSIONSTORE_REDIS_URL",
    "SESSIONSTORE_QUEUE_REDIS_URL",
    "SESSIONSTORE_BREAKER_SLOW_CALL_DURATION",
    "SESSIONSTORE_WORKER_ID",
    "SESSIONSTORE_QUEUE_NAME",
    "SESSIONSTORE_ADMIN_TOKEN",
    "SESSIONSTORE_SERVICE_TOKENS",
    "SESSIONSTORE_HEALTH_TOKEN",
    "SESSIONSTORE_UPSTREAM_ALLOWED_HOSTS",
    "SESSIONSTORE_UPSTREAM_ALLOWED_COMMANDS",
    "SESSIONSTORE_UPSTREAM_MAX_ATTEMPTS",
    "SESSIONSTORE_UPSTREAM_INITIAL_DELAY",
    "SESSIONSTORE_UPSTREAM_MAX_DELAY",
    "SESSIONSTORE_UPSTREAM_JITTER",
    "SESSIONSTORE_UPSTREAM_MAX_CONNECTION_AGE",
    "SESSIONSTORE_UPSTREAM_CREDENTIALS_DIR",
    "SESSIONSTORE_SECRET_KEY",
]


def _names(settings: Settings) -> set[str]:
    """Every variable name the reader accepts."""
    return set(ENVIRONMENT_VARIABLES)


#: Settings read where they take effect rather than as given.
_EFFECTIVE: dict[str, Callable[[Settings], object]] = {
    "SESSIONSTORE_UPSTREAM_PROFILE": lambda s: s.upstream.profile.name,
    "SESSIONSTORE_UPSTREAM_MAX_ATTEMPTS": lambda s: s.upstream.backoff.max_attempts,
    "SESSIONSTORE_UPSTREAM_INITIAL_DELAY": lambda s: s.upstream.backoff.initial_delay,
    "SESSIONSTORE_UPSTREAM_MAX_DELAY": lambda s: s.upstream.backoff.max_delay,
    "SESSIONSTORE_UPSTREAM_JITTER": lambda s: s.upstream.backoff.jitter,
    "SESSIONSTORE_UPSTREAM_MAX_CONNECTION_AGE": lambda s: s.upstream.max_connection_age,
    "SESSIONSTORE_UPSTREAM_RECONNECT_MAX_ATTEMPTS": lambda s: (
        s.upstream.reconnect_backoff.max_attempts
    ),
    "SESSIONSTORE_UPSTREAM_RECONNECT_MAX_DELAY": lambda s: s.upstream.reconnect_backoff.max_delay,
}


def _read(settings: Settings, variable: str) -> object:
    """The value `variable` ended up as, secrets revealed as `Secret`."""
    effective = _EFFECTIVE.get(variable)
    if effective is not None:
        value = effective(settings)
    else:
        group, name = ENVIRONMENT_VARIABLES[variable]
        value = getattr(settings if group is None else getattr(settings, group), name)
    if isinstance(value, SecretStr):
        return Secret(value.get_secret_value())
    return value


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``SESSIONSTORE_*`` variable of the calling shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("SESSIONSTORE_"):
            monkeypatch.delenv(name)


def test_the_reader_accepts_exactly_the_documented_names() -> None:
    """No variable appeared or disappeared."""
    assert _names(Settings()) == {row[0] for row in CONTRACT}


@pytest.mark.parametrize(("variable", "default", "sample", "parsed"), CONTRACT)
def test_default_and_parsed_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, default: object, sample: str, parsed: object
) -> None:
    """Unset, a variable has its default; set, it parses to the same value and type as before."""
    got = _read(Settings(), variable)
    assert (got, type(got)) == (default, type(default))
    monkeypatch.setenv(variable, sample)
    got = _read(Settings(), variable)
    assert (got, type(got)) == (parsed, type(parsed))


@pytest.mark.parametrize("variable", EMPTY_MEANS_UNSET)
def test_empty_means_unset(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """``NAME=`` reads as unset (its default) for the optional settings."""
    default = _read(Settings(), variable)
    monkeypatch.setenv(variable, "")
    assert _read(Settings(), variable) == default


@pytest.mark.parametrize(
    ("variable", "text"),
    [("SESSIONSTORE_IDLE_TIMEOUT", "PT30M"), ("SESSIONSTORE_BREAKER_WINDOW", "PT30M")],
)
def test_durations_accept_iso_8601(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    """Durations read ISO 8601 as well as seconds."""
    monkeypatch.setenv(variable, text)
    assert _read(Settings(), variable) == timedelta(minutes=30)


def test_unknown_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``SESSIONSTORE_*`` name the reader does not know is not an error."""
    monkeypatch.setenv("SESSIONSTORE_NOT_A_SETTING", "1")
    assert _read(Settings(), "SESSIONSTORE_KEY_PREFIX") == "ss"


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    """As before, the reader matches names whatever their case."""
    monkeypatch.setenv("sessionstore_key_prefix", "lower")
    assert _read(Settings(), "SESSIONSTORE_KEY_PREFIX") == "lower"


def test_every_variable_is_documented() -> None:
    """Each variable appears in the README or docs/, in full or in a table's short form."""
    root = Path(__file__).resolve().parents[1]
    text = "\n".join(p.read_text() for p in [root / "README.md", *(root / "docs").glob("*.md")])
    missing = []
    for variable in ENVIRONMENT_VARIABLES:
        short = variable.removeprefix("SESSIONSTORE_")
        in_group = short.removeprefix("BREAKER_")
        forms = [variable, f"`{short}`", f"`_{short}`", f"`{in_group}`", f"`_{in_group}`"]
        if not any(form in text for form in forms):
            missing.append(variable)
    assert missing == []
