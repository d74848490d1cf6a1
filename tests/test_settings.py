"""Settings: Redis URLs and the environment."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessionstore import InvalidInput, RedisSettings, Settings


@pytest.mark.parametrize(
    ("url", "mode", "hosts", "db"),
    [
        ("redis://localhost:6380/2", "standalone", (("localhost", 6380),), 2),
        ("redis://h", "standalone", (("h", 6379),), 0),
        ("rediss://u:p@h:1/0", "standalone", (("h", 1),), 0),
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster?db=3",
            "sentinel",
            (("s1", 26379), ("s2", 26380)),
            3,
        ),
        ("redis+cluster://a:7001,b:7002", "cluster", (("a", 7001), ("b", 7002)), 0),
    ],
)
def test_dsn_forms(url: str, mode: str, hosts: tuple[tuple[str, int], ...], db: int) -> None:
    """Each documented URL form parses to its mode, hosts and database."""
    settings = RedisSettings.from_dsn(url)
    assert (settings.mode, settings.hosts, settings.database) == (mode, hosts, db)


def test_password_is_secret_and_masked() -> None:
    """The password never shows in repr or in the printable URL."""
    settings = RedisSettings.from_dsn("redis://user:hunter2@h:1/0")
    assert settings.password is not None and settings.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.to_dsn()
    assert settings.to_dsn() == "redis://user:***@h:1/0"


@pytest.mark.parametrize("url", ["http://h:1", "redis://h:port", "memcached://h"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        RedisSettings.from_dsn(url)


def test_environment_builds_session_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """SESSIONSTORE_* variables reach the frozen SessionSettings; durations in seconds."""
    monkeypatch.setenv("SESSIONSTORE_IDLE_TIMEOUT", "90")
    monkeypatch.setenv("SESSIONSTORE_KEY_PREFIX", "app1")
    monkeypatch.setenv("SESSIONSTORE_MAX_REQUESTS_GLOBAL", "500")
    session = Settings().session
    assert session.idle_timeout == timedelta(seconds=90)
    assert (session.key_prefix, session.max_requests_global) == ("app1", 500)


def test_queue_defaults_to_the_store_url_but_not_to_a_cluster() -> None:
    """arq cannot use Redis Cluster: a cluster store needs its own queue URL."""
    settings = Settings()
    assert settings.queue_redis("redis://h:1/0").hosts == (("h", 1),)
    with pytest.raises(InvalidInput, match="QUEUE_REDIS_URL"):
        settings.queue_redis("redis+cluster://a:1")
    explicit = Settings(queue_redis_url="redis://q:2/0")
    assert explicit.queue_redis("redis+cluster://a:1").hosts == (("q", 2),)


def test_empty_admin_token_turns_breaker_control_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """SESSIONSTORE_ADMIN_TOKEN unset or empty (compose passes it through empty) is off;
    a value is kept secret."""
    monkeypatch.delenv("SESSIONSTORE_ADMIN_TOKEN", raising=False)
    assert Settings().server.admin_token is None
    monkeypatch.setenv("SESSIONSTORE_ADMIN_TOKEN", "")
    assert Settings().server.admin_token is None
    monkeypatch.setenv("SESSIONSTORE_ADMIN_TOKEN", "s3cret")
    token = Settings().server.admin_token
    assert (
        token is not None and token.get_secret_value() == "s3cret" and "s3cret" not in repr(token)
    )
