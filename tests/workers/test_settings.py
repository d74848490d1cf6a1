"""Worker settings: the environment, cron periods, and the arq WorkerSettings they make."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pydantic
import pytest

from sessionstore import InvalidInput, RedisSettings, Settings, WorkerConfig
from sessionstore.fleet import cron_interval_error
from workers.context import CRON_MAX_TRIES, cron_fields
from workers.settings import arq_redis_settings, build_worker_settings

URL = "redis://127.0.0.1:6399/0"


@pytest.mark.parametrize("seconds", [1, 2, 10, 15, 30, 60, 300, 900, 1800, 3600, 21600, 86400])
def test_periods_that_fit_a_wall_clock_cron(seconds: int) -> None:
    """Whole seconds dividing a minute, minutes dividing an hour, hours dividing a day."""
    assert cron_interval_error(timedelta(seconds=seconds)) is None


@pytest.mark.parametrize("seconds", [0, 0.5, 7, 45, 90, 420, 5400, 36000, 172800])
def test_periods_that_do_not_fit_are_refused(seconds: float) -> None:
    assert cron_interval_error(timedelta(seconds=seconds)) is not None


@pytest.mark.parametrize(
    ("seconds", "fields"),
    [
        (10, {"second": {0, 10, 20, 30, 40, 50}}),
        (300, {"minute": set(range(0, 60, 5)), "second": 0}),
        (3600, {"hour": set(range(24)), "minute": 0, "second": 0}),
        (21600, {"hour": {0, 6, 12, 18}, "minute": 0, "second": 0}),
    ],
)
def test_cron_fields_fire_every_period(seconds: int, fields: dict[str, object]) -> None:
    assert cron_fields(timedelta(seconds=seconds)) == fields


def test_environment_reaches_the_worker_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """SESSIONSTORE_AGGRESSIVE_CLEANUP and the intervals are read as documented."""
    monkeypatch.setenv("SESSIONSTORE_AGGRESSIVE_CLEANUP", "true")
    monkeypatch.setenv("SESSIONSTORE_SWEEP_INTERVAL", "300")
    monkeypatch.setenv("SESSIONSTORE_AGGRESSIVE_SWEEP_INTERVAL", "15")
    monkeypatch.setenv("SESSIONSTORE_LONG_OVERDUE_AFTER", "PT2H")
    monkeypatch.setenv("SESSIONSTORE_SWEEP_BATCH_SIZE", "100")
    monkeypatch.setenv("SESSIONSTORE_WORKER_ID", "")
    config = Settings().worker
    assert config.aggressive_cleanup is True
    assert config.active_sweep_interval == timedelta(seconds=15)
    assert config.sweep_interval == timedelta(minutes=5)
    assert config.long_overdue_after == timedelta(hours=2)
    assert config.sweep_batch_size == 100
    assert config.worker_id is None and "-" in config.resolved_worker_id()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sweep_interval", timedelta(seconds=7), "sweep_interval"),
        ("repair_interval", timedelta(minutes=7), "repair_interval"),
        ("worker_dead_after", timedelta(seconds=5), "worker_dead_after"),
        ("heartbeat_ttl", timedelta(seconds=10), "heartbeat_ttl"),
        ("job_timeout", timedelta(milliseconds=10), "job_timeout"),
        ("sweep_max_per_run", 10, "sweep_max_per_run"),
        ("worker_id", "has space", "worker_id"),
        ("queue_name", "bad queue!", "queue_name"),
    ],
)
def test_bad_worker_settings_are_refused_with_their_name(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        WorkerConfig(**{field: value})


def _cron_names(settings_class: type) -> dict[str, object]:
    return {job.name: job for job in settings_class.cron_jobs}  # type: ignore[attr-defined]


def test_standard_mode_sweeps_on_the_standard_interval() -> None:
    """Standard: one sweep cron at sweep_interval, nothing at start-up."""
    settings = Settings(key_prefix="std", sweep_interval=timedelta(seconds=30))
    built = build_worker_settings(settings, redis_url=URL)
    jobs = _cron_names(built)
    assert set(jobs) == {"std:sweep_due", "std:repair_indexes"}
    sweep = jobs["std:sweep_due"]
    assert sweep.second == {0, 30} and sweep.run_at_startup is False  # type: ignore[attr-defined]
    assert built.queue_name == "std:queue"  # type: ignore[attr-defined]


def test_aggressive_mode_sweeps_more_often_and_at_start_up() -> None:
    """Aggressive: the shorter interval, plus the long-overdue pass when a worker starts."""
    settings = Settings(
        key_prefix="agg", aggressive_cleanup=True, aggressive_sweep_interval=timedelta(seconds=5)
    )
    jobs = _cron_names(build_worker_settings(settings, redis_url=URL))
    assert set(jobs) == {"agg:sweep_due", "agg:sweep_long_overdue", "agg:repair_indexes"}
    assert jobs["agg:sweep_due"].second == set(range(0, 60, 5))  # type: ignore[attr-defined]
    assert jobs["agg:sweep_long_overdue"].run_at_startup is True  # type: ignore[attr-defined]


def test_every_job_has_the_short_timeout_and_is_retried_after_a_crash() -> None:
    """arq re-runs a killed job after max(timeouts) + 10 s, and only if tries are left."""
    settings = Settings(aggressive_cleanup=True, job_timeout=timedelta(seconds=5))
    built = build_worker_settings(settings, redis_url=URL)
    for job in built.cron_jobs:  # type: ignore[attr-defined]
        assert job.timeout_s == 5
        assert job.max_tries == CRON_MAX_TRIES > 1
    assert built.job_timeout == timedelta(seconds=5)  # type: ignore[attr-defined]


def test_a_worker_without_a_store_url_is_refused_clearly() -> None:
    with pytest.raises(InvalidInput, match="SESSIONSTORE_REDIS_URL"):
        build_worker_settings(Settings(redis_url=None))


def test_a_cluster_store_needs_its_own_queue_url() -> None:
    """arq cannot use Redis Cluster: the queue must be set apart."""
    cluster = "redis+cluster://127.0.0.1:7001,127.0.0.1:7002"
    with pytest.raises(InvalidInput, match="QUEUE_REDIS_URL"):
        build_worker_settings(Settings(), redis_url=cluster)
    built = build_worker_settings(Settings(queue_redis_url=URL), redis_url=cluster)
    assert built.redis_settings.port == 6399  # type: ignore[attr-defined]


def test_queue_connection_settings_for_arq() -> None:
    """Standalone, Sentinel and socket URLs become arq's RedisSettings; a cluster is refused."""
    plain = arq_redis_settings(RedisSettings.from_dsn("redis://u:pw@h:1/3"))
    assert (plain.host, plain.port, plain.database) == ("h", 1, 3)
    assert (plain.username, plain.password) == ("u", "pw")
    sentinel = arq_redis_settings(RedisSettings.from_dsn("redis+sentinel://s1:2,s2:3/main"))
    assert sentinel.sentinel and sentinel.host == [("s1", 2), ("s2", 3)]
    assert sentinel.sentinel_master == "main"
    socket_path = arq_redis_settings(RedisSettings.from_dsn("unix:///tmp/r.sock?db=2"))
    assert (socket_path.unix_socket_path, socket_path.database) == ("/tmp/r.sock", 2)
    with pytest.raises(InvalidInput, match="Cluster"):
        arq_redis_settings(RedisSettings.from_dsn("redis+cluster://a:1"))


def test_importing_the_worker_settings_needs_no_redis() -> None:
    """``import workers.settings`` reads no URL and connects nowhere; asking for
    ``workers.WorkerSettings`` without a URL fails with the clear message."""
    code = (
        "import workers, workers.settings\n"
        "try:\n"
        "    workers.WorkerSettings\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "SESSIONSTORE_KEY_PREFIX": "imp"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("InvalidInput SESSIONSTORE_REDIS_URL is not set")
