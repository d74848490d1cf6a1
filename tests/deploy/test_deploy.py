"""The deployment files: deploy/redis.conf and its ACL on a real redis-server, the
Sentinel example, the load balancer config and docker-compose.yml."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import redis.exceptions as rex
import yaml
from arq import create_pool
from arq.connections import RedisSettings as ArqRedisSettings
from arq.worker import Worker, create_worker

from sessionstore import (
    RedisClient,
    RedisSettings,
    SessionSettings,
    SessionStatus,
    SessionStore,
    Settings,
    Tombstone,
    WorkerState,
    create_client,
    list_workers,
)
from sessionstore.store import list_by_status
from sessionstore.testing import find_server_binary, free_port, wait_until
from tests.polling import eventually
from workers.settings import build_worker_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: The example passwords whose SHA-256 deploy/users.acl holds.
STORE_PASSWORD = "change-me-sessionstore"
ADMIN_PASSWORD = "change-me-admin"
#: Directives that name container paths or addresses; the tests supply their own.
_LOCAL = ("dir", "aclfile", "bind", "port", "include", "replicaof")


class ConfServer:
    """redis-server (or Sentinel) started from a deploy/ config rewritten for 127.0.0.1."""

    def __init__(self, lines: list[str], *, sentinel: bool = False) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-deploy-"))
        self.lines = lines
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ConfServer:
        shutil.copy(DEPLOY / "users.acl", self.directory / "users.acl")
        local = [
            f"dir {self.directory}",
            f"port {self.port}",
            "bind 127.0.0.1",
            f"logfile {self.directory / 'server.log'}",
        ]
        if not self.sentinel:
            local.append(f"aclfile {self.directory / 'users.acl'}")
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join([*self.lines, *local]) + "\n")
        args = [find_server_binary(), str(conf), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        probe = sync_redis.Redis(port=self.port, username="healthcheck", password="x")
        if self.sentinel:
            probe = sync_redis.Redis(port=self.port)
        try:
            wait_until(lambda: self._alive() and probe.ping(), f"server from {conf}")
        finally:
            probe.close()
        return self

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited: {log}")
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


def conf_lines(path: Path, **replace: str) -> list[str]:
    """The config's directives minus the container-specific ones, with replacements."""
    out = []
    for line in path.read_text().splitlines():
        name = line.split(" ", 1)[0]
        if not line.strip() or line.startswith("#") or name in _LOCAL:
            continue
        for old, new in replace.items():
            line = line.replace(old, new)
        out.append(line)
    return out


@pytest.fixture(scope="module")
def primary() -> Iterator[ConfServer]:
    server = ConfServer(conf_lines(DEPLOY / "redis.conf")).start()
    yield server
    server.stop()


@pytest.fixture
async def acl_client(primary: ConfServer) -> AsyncIterator[RedisClient]:
    client = create_client(RedisSettings.from_dsn(primary.url("sessionstore", STORE_PASSWORD)))
    yield client
    await client.aclose()


def test_redis_conf_keeps_sessions_safe(primary: ConfServer) -> None:
    """AOF on (fsync every second) and noeviction: sessions and locks are never evicted."""
    admin = sync_redis.Redis(
        port=primary.port, username="admin", password=ADMIN_PASSWORD, decode_responses=True
    )
    try:
        config = admin.config_get("*")
    finally:
        admin.close()
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert int(config["maxmemory"]) > 0


async def test_acl_user_can_do_everything_the_store_does(acl_client: RedisClient) -> None:
    """The limited user runs every store transition, the global limit, locks, counts,
    sweeps, listings and the breaker channel."""
    store = SessionStore(
        acl_client,
        SessionSettings(key_prefix="ss", shards=4, max_requests_global=10),
    )
    assert await store.load_scripts() > 0
    made = await store.create(user_id="acl-user", state={"n": 0})
    await store.set_state(made.id, {"n": 1}, expected_version=1)
    await store.mutate(made.id, lambda state: {**state, "n": state["n"] + 1})
    async with store.track_request(made.id):
        assert (await store.get(made.id)).active_requests == 1
    async with store.lock(made.id, ttl=timedelta(seconds=5)):
        pass
    assert [s.id for s in await store.list_for_user("acl-user")] == [made.id]
    rotated = await store.rotate(made.id)
    await store.expire(rotated.id)
    resumed = await store.resume(rotated.id)
    assert resumed.resumed_from == rotated.id
    await store.delete(resumed.id)
    assert (await store.counts()).totals["created"] >= 1
    for shard in range(4):
        await store.sweep_shard(shard)
    closed = await list_by_status(store, SessionStatus.CLOSED)
    assert resumed.id in {t.id for t in closed}
    assert await acl_client.publish("ss:breaker-transitions", "probe") >= 0


async def noop(ctx: dict[str, Any]) -> str:
    """A job for the arq check."""
    return "done"


async def test_acl_user_can_run_the_arq_queue(primary: ConfServer) -> None:
    """arq enqueues and a burst worker runs a job with only ~arq:* keys allowed."""
    settings = ArqRedisSettings(
        host="127.0.0.1", port=primary.port, username="sessionstore", password=STORE_PASSWORD
    )
    pool = await create_pool(settings)
    worker = Worker(
        functions=[noop], redis_pool=pool, burst=True, poll_delay=0, handle_signals=False
    )
    try:
        job = await pool.enqueue_job("noop")
        assert job is not None
        await worker.main()
        assert await job.result(timeout=5) == "done"
    finally:
        # Not worker.close(): it calls redis-py's deprecated close() on our pool.
        await pool.aclose()


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's close()
async def test_acl_user_can_run_the_fleets_worker(
    primary: ConfServer, acl_client: RedisClient
) -> None:
    """The real worker (workers/settings.py) as the limited user, in burst mode: it loads
    the scripts, runs the sweep and repair jobs from its queue, and writes its heartbeat."""
    daily = timedelta(days=1)  # only the queued jobs run, no cron tick
    settings = Settings(
        redis_url=primary.url("sessionstore", STORE_PASSWORD),
        key_prefix="ss",
        shards=4,
        worker_id="acl-worker",
        sweep_interval=daily,
        aggressive_sweep_interval=daily,
        repair_interval=daily,
    )
    store = SessionStore(acl_client, settings.session)
    due = [(await store.create(idle_timeout=timedelta(milliseconds=1))).id for _ in range(3)]
    worker_settings: Any = build_worker_settings(settings)
    pool = await create_pool(worker_settings.redis_settings)
    try:
        for job in ("ss:sweep_due", "ss:repair_indexes"):
            await pool.enqueue_job(job, _queue_name=worker_settings.queue_name)
    finally:
        await pool.aclose()
    worker = create_worker(worker_settings, burst=True, poll_delay=0, handle_signals=False)
    try:
        assert await worker.run_check() == 2  # raises FailedJobs if a job failed
    finally:
        await worker.close()
    ended = [await store.lookup(session_id) for session_id in due]
    assert all(isinstance(t, Tombstone) and t.reason == "idle" for t in ended)
    [info] = await list_workers(acl_client, store.keys, dead_after=timedelta(seconds=30))
    assert (info.id, info.state) == ("acl-worker", WorkerState.STOPPED)
    assert {"sweep", "repair"} <= set(info.reports)


@pytest.mark.parametrize(
    "command",
    [
        ("GET", "other:key"),
        ("SET", "sessionstorex", "1"),
        ("EVAL", "return redis.call('GET', KEYS[1])", 1, "other:key"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("DEBUG", "SLEEP", "0"),
        ("PUBLISH", "other-channel", "x"),
        ("SHUTDOWN",),
    ],
)
async def test_acl_user_cannot_touch_anything_else(
    acl_client: RedisClient, command: tuple[Any, ...]
) -> None:
    """Other keys, other channels and admin commands are refused (inside scripts too)."""
    with pytest.raises(rex.ResponseError, match=r"(?i)noperm|permission|can.t|not allowed"):
        await acl_client.execute_command(*command)


def test_anonymous_clients_are_refused(primary: ConfServer) -> None:
    """The default user is off: no client gets in without a user and password."""
    anonymous = sync_redis.Redis(port=primary.port)
    try:
        with pytest.raises(rex.AuthenticationError):
            anonymous.get("ss:x")
    finally:
        anonymous.close()


@pytest.mark.slow
async def test_sentinel_example_watches_the_primary(primary: ConfServer) -> None:
    """The example replica follows the primary with its ACL user, a Sentinel with the
    example config authenticates with its user, and the store works through it."""
    replica = ConfServer(
        [
            *conf_lines(DEPLOY / "redis.conf"),
            *conf_lines(DEPLOY / "sentinel" / "replica.conf"),
            f"replicaof 127.0.0.1 {primary.port}",
        ]
    ).start()
    monitor = f"sentinel monitor sessionstore 127.0.0.1 {primary.port} 1"
    lines = [
        monitor if line.startswith("sentinel monitor") else line
        for line in conf_lines(DEPLOY / "sentinel" / "sentinel.conf")
    ]
    sentinel = ConfServer(lines, sentinel=True).start()
    admin = create_client(RedisSettings.from_dsn(primary.url("admin", ADMIN_PASSWORD)))
    url = f"redis+sentinel://sessionstore:{STORE_PASSWORD}@127.0.0.1:{sentinel.port}/sessionstore"
    via_sentinel = create_client(RedisSettings.from_dsn(url))
    try:

        async def sentinel_and_replica_logged_in() -> bool:
            users = {
                part.removeprefix("user=")
                for line in (await admin.execute_command("CLIENT", "LIST")).splitlines()
                for part in line.split()
                if part.startswith("user=")
            }
            return {"sentinel", "replica"} <= users

        await eventually(sentinel_and_replica_logged_in, timeout=30)
        store = SessionStore(via_sentinel, SessionSettings(key_prefix="ss", shards=4))
        made = await store.create()
        assert (await store.get(made.id)).id == made.id
    finally:
        await via_sentinel.aclose()
        await admin.aclose()
        sentinel.stop()
        replica.stop()


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_describes_the_fleet() -> None:
    """Redis with the deploy config, three servers, two workers, a load balancer, Prometheus."""
    services = _compose()["services"]
    servers = [s for s in services.values() if "serve" in s.get("command", [])]
    workers = [s for s in services.values() if "worker" in s.get("command", [])]
    assert len(servers) == 3 and len(workers) == 2
    assert any("redis.conf" in v for v in services["redis"]["volumes"])
    assert any("haproxy.cfg" in v for v in services["lb"]["volumes"])
    assert any("prometheus.yml" in v for v in services["prometheus"]["volumes"])
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{name}:8000" for name, s in services.items() if s in servers)


@pytest.mark.parametrize(
    "files",
    [
        ("docker-compose.yml",),
        ("docker-compose.yml", "deploy/sentinel/docker-compose.sentinel.yml"),
    ],
)
def test_compose_files_validate(files: tuple[str, ...]) -> None:
    """Debian's docker-compose accepts the files (`config -q`, no engine needed)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    args = [binary, *(part for name in files for part in ("-f", name)), "config", "-q"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("sentinel", [False, True], ids=["standalone", "sentinel"])
def test_compose_workers_get_working_settings(
    sentinel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker's environment, as docker-compose resolves it, builds the fleet's arq
    settings: its own worker id, the job queue on the store's Redis (through the
    Sentinels with the override) as the ACL's sessionstore user."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    files = ["-f", "docker-compose.yml"]
    if sentinel:
        files += ["-f", "deploy/sentinel/docker-compose.sentinel.yml"]
    # The example defaults, whatever this machine's environment says.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTORE_")}
    done = subprocess.run(
        [binary, *files, "config"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name in ("worker-1", "worker-2"):
        assert "--check" in " ".join(services[name]["healthcheck"]["test"])
        for variable in [v for v in os.environ if v.startswith("SESSIONSTORE_")]:
            monkeypatch.delenv(variable)
        for variable, value in services[name]["environment"].items():
            monkeypatch.setenv(variable, str(value))
        settings = Settings()
        queue: Any = build_worker_settings(settings).redis_settings
        assert settings.worker.worker_id == name
        assert (queue.username, queue.password) == ("sessionstore", STORE_PASSWORD)
        if sentinel:
            assert queue.sentinel and [h for h, _ in queue.host] == [
                "sentinel-1",
                "sentinel-2",
                "sentinel-3",
            ]
        else:
            assert (queue.host, queue.port, queue.sentinel) == ("redis", 6379, False)


def test_haproxy_config_validates() -> None:
    """haproxy -c accepts deploy/haproxy.cfg (replica names need not resolve here)."""
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if binary is None:
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    done = subprocess.run(
        [binary, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
