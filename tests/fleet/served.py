"""A served fleet for tests: a private Redis, several `sessionstore serve` processes and
`sessionstore worker` processes.

Each replica and worker is a real child process (``python -m sessionstore ...``) run by
the supervisor ``sessionstore dev`` uses (`sessionstore.testing.Supervisor`), logging
to a file in the fleet's directory, stopped by pid. A replica is ready when it answers
/healthz as itself, a worker when its heartbeat is live.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sessionstore import (
    KeySpace,
    RedisSettings,
    Settings,
    WorkerState,
    create_client,
    list_workers,
)
from sessionstore.testing import (
    ChildProcess,
    LocalRedis,
    Supervisor,
    free_port,
    wait_http_ready,
    wait_until,
)
from tests.polling import eventually

_READY_SECONDS = 60.0
#: A SIGTERMed child gets this long to stop before SIGKILL.
_STOP_SECONDS = 30.0
ROOT = Path(__file__).resolve().parents[2]


class Replica(ChildProcess):
    """One ``sessionstore serve`` child process on a port of its own."""

    def __init__(
        self, name: str, env: dict[str, str], directory: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "sessionstore", "serve", "--port", str(self.port)]
        super().__init__(
            name,
            [*command, "--log-level", "warning", *args],
            log_path=directory / f"{name}.log",
            env=env,
            url=f"http://127.0.0.1:{self.port}",
        )

    def wait_ready(self) -> None:
        """Poll /healthz until it answers as this process (deadline), failing early if
        the process died."""
        wait_http_ready(self, _READY_SECONDS)

    def terminate(self) -> int:
        """SIGTERM, as an orchestrator stops a replica; returns the exit code."""
        return self.stop(_STOP_SECONDS)


class Worker(ChildProcess):
    """One ``sessionstore worker`` child process, with a fixed worker id."""

    def __init__(
        self, name: str, env: dict[str, str], directory: Path, args: tuple[str, ...] = ()
    ) -> None:
        super().__init__(
            name,
            [sys.executable, "-m", "sessionstore", "worker", *args],
            log_path=directory / f"{name}.log",
            env={**env, "SESSIONSTORE_WORKER_ID": name},
        )

    def terminate(self) -> int:
        """SIGTERM (arq's clean stop); returns the exit code."""
        return self.stop(_STOP_SECONDS)


async def live_worker_ids(redis_url: str, settings: Settings) -> set[str]:
    """Ids of the workers whose heartbeat is live now (a client of its own)."""
    client = create_client(RedisSettings.from_dsn(redis_url))
    try:
        keys = KeySpace(settings.session.key_prefix, settings.session.shards)
        found = await list_workers(client, keys, dead_after=settings.worker.worker_dead_after)
    finally:
        await client.aclose()
    return {w.id for w in found if w.state is WorkerState.LIVE}


class ServedFleet:
    """A private Redis (AOF on, so it can be stopped and restarted on its port), replicas
    and workers."""

    def __init__(
        self,
        replicas: int,
        settings: dict[str, str],
        workers: int = 0,
        *,
        serve_args: tuple[str, ...] = (),
        worker_args: tuple[str, ...] = (),
    ) -> None:
        """`serve_args` and `worker_args` go after each child's own (``--log-level debug``
        wins over the replicas' default ``warning``)."""
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-fleet-"))
        self.redis = LocalRedis(directory=str(self.directory / "redis"), appendonly=True)
        self.env = {
            **os.environ,
            "SESSIONSTORE_REDIS_URL": self.redis.url,
            **settings,
        }
        self.replicas = [
            Replica(f"replica-{n + 1}", self.env, self.directory, serve_args)
            for n in range(replicas)
        ]
        self.workers = [
            Worker(f"worker-{n + 1}", self.env, self.directory, worker_args) for n in range(workers)
        ]
        self.supervisor = Supervisor()
        # What the children read from the same environment (prefix, shards, dead-after).
        self.settings = Settings(**_fields(self.env))

    def start(self) -> ServedFleet:
        try:
            self.redis.start()
            for child in [*self.replicas, *self.workers]:
                self.supervisor.start(child)
            for replica in self.replicas:
                replica.wait_ready()
            asyncio.run(self.wait_workers_live())
        except BaseException:
            self.stop()
            raise
        return self

    async def wait_workers_live(self) -> None:
        """Poll (deadline) until every worker's heartbeat is live."""
        names = {worker.name for worker in self.workers}
        deadline = time.monotonic() + _READY_SECONDS
        while names - await live_worker_ids(self.redis.url, self.settings):
            for worker in self.workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not live after {_READY_SECONDS}s")
            await asyncio.sleep(0.1)

    def restart(self, replica: Replica) -> None:
        """Start a stopped replica again on the same port."""
        replica.start()
        replica.wait_ready()

    def stop(self) -> None:
        self.supervisor.stop()
        self.redis.stop(remove=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def _fields(env: dict[str, str]) -> dict[str, str]:
    """``SESSIONSTORE_*`` variables as `Settings` field names."""
    prefix = "SESSIONSTORE_"
    return {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}


def log_tails(directory: Path, lines: int = 60) -> str:
    """The last `lines` lines of every process log in `directory`, one section per file."""
    sections = []
    for log in sorted(directory.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        sections.append(f"----- {log.name} -----\n" + "\n".join(tail))
    return "\n".join(sections)


def metric_sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


def haproxy_config(fleet: ServedFleet, port: int, stats_port: int) -> str:
    """deploy/haproxy.cfg with the compose names and Docker's DNS swapped for local ports."""
    text = (ROOT / "deploy" / "haproxy.cfg").read_text()
    text = re.sub(r"\nresolvers docker\n(    .*\n)+", "\n", text)
    text = text.replace(" resolvers docker", "").replace("bind :8080", f"bind 127.0.0.1:{port}")
    text = text.replace("bind :8404", f"bind 127.0.0.1:{stats_port}")
    for n, replica in enumerate(fleet.replicas, start=1):
        text = text.replace(f"server-{n}:8000", f"127.0.0.1:{replica.port}")
    # One log line per request (status, timings, termination state) on HAProxy's
    # stdout, which is its log file: what a failed test is diagnosed from.
    text = text.replace("global\n", "global\n    log stdout format raw local0\n", 1)
    return text.replace("defaults\n", "defaults\n    log global\n    option httplog\n", 1)


@contextmanager
def run_haproxy(binary: str, fleet: ServedFleet) -> Iterator[str]:
    """HAProxy (`binary`) with the deploy config in front of the fleet's replicas, until
    the block ends; yields its URL once it answers /healthz."""
    port, stats = free_port(), free_port()
    config = fleet.directory / "haproxy.cfg"
    config.write_text(haproxy_config(fleet, port, stats))
    haproxy = ChildProcess(
        "haproxy", [binary, "-db", "-f", str(config)], log_path=fleet.directory / "haproxy.log"
    ).start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(lambda: haproxy.check_alive() or answers(), "haproxy", timeout=30)
        yield url
    finally:
        haproxy.stop(10)


async def demo_call(
    http: httpx.AsyncClient, base: str, upstream: str, outcome: str
) -> httpx.Response:
    """A guarded call through replica `base` to the simulated upstream (breaker demo:<upstream>)."""
    return await http.post(f"{base}/demo/upstreams/{upstream}/call", json={"outcome": outcome})


async def guarded_calls(
    http: httpx.AsyncClient, bases: list[str], upstream: str, *, expect: int
) -> None:
    """A call to a healthy simulated upstream through each replica of `bases`; each must
    answer `expect` (503: refused by the breaker, without reaching the upstream)."""
    for base in bases:
        answer = await demo_call(http, base, upstream, "success")
        assert answer.status_code == expect, answer.text
        if expect == 503:
            assert answer.json()["error"] == "breaker_open"


async def local_breaker_state(http: httpx.AsyncClient, base: str, name: str) -> str | None:
    """Replica `base`'s own view of breaker `name` (None if it holds none)."""
    answer = await http.get(f"{base}/breakers/{name}")
    assert answer.status_code == 200, answer.text
    local = answer.json()["local"]
    return None if local is None else str(local["state"])


async def seen_by(
    http: httpx.AsyncClient, deadline: float, bases: list[str], name: str, state: str
) -> None:
    """Poll the replicas' read endpoint until each one's own view of breaker `name` is
    `state`; fail after `deadline` seconds."""

    async def everywhere() -> bool:
        views = await asyncio.gather(*(local_breaker_state(http, b, name) for b in bases))
        return all(view == state for view in views)

    await eventually(everywhere, timeout=deadline, interval=0.02)
