"""A served fleet for tests: a private Redis, several `sessionstore serve` processes and
`sessionstore worker` processes.

Each replica and worker is a real child process (``python -m sessionstore ...``),
logging to a file in the fleet's directory, stopped by pid. A replica is ready
when it answers /healthz, a worker when its heartbeat is live.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

from sessionstore import (
    KeySpace,
    LocalRedis,
    RedisSettings,
    Settings,
    WorkerState,
    create_client,
    list_workers,
)
from sessionstore._embedded import free_port

_READY_SECONDS = 60.0


class Replica:
    """One ``sessionstore serve`` child process."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "sessionstore", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self) -> None:
        """Poll /healthz until it answers (deadline), failing early if the process died."""
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {_READY_SECONDS}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: no drain, no lease returned, as in a crash."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> int:
        """SIGTERM, as an orchestrator stops a replica; returns the exit code."""
        return self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> int:
        code = 0
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                code = self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


class Worker:
    """One ``sessionstore worker`` child process, with a fixed worker id."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.env = {**env, "SESSIONSTORE_WORKER_ID": name}
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sessionstore", "worker"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.full_log()[-3000:]

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM (arq's clean stop); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


async def live_worker_ids(redis_url: str, settings: Settings) -> set[str]:
    """Ids of the workers whose heartbeat is live now (a client of its own)."""
    client = create_client(RedisSettings.from_dsn(redis_url))
    try:
        keys = KeySpace(settings.key_prefix, settings.shards)
        found = await list_workers(client, keys, dead_after=settings.worker_dead_after)
    finally:
        await client.aclose()
    return {w.id for w in found if w.state is WorkerState.LIVE}


class ServedFleet:
    """A private Redis (AOF on, so it can be stopped and restarted on its port), replicas
    and workers."""

    def __init__(self, replicas: int, settings: dict[str, str], workers: int = 0) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-fleet-"))
        self.redis = LocalRedis(directory=str(self.directory / "redis"), appendonly=True)
        self.env = {
            **os.environ,
            "SESSIONSTORE_REDIS_URL": self.redis.url,
            **settings,
        }
        self.replicas = [
            Replica(f"replica-{n + 1}", self.env, self.directory) for n in range(replicas)
        ]
        self.workers = [Worker(f"worker-{n + 1}", self.env, self.directory) for n in range(workers)]
        # What the children read from the same environment (prefix, shards, dead-after).
        self.settings = Settings(**_fields(self.env))

    def start(self) -> ServedFleet:
        try:
            self.redis.start()
            for child in [*self.replicas, *self.workers]:
                child.start()
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
                if not worker.alive():
                    raise RuntimeError(f"{worker.name} exited: {worker.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not live after {_READY_SECONDS}s")
            await asyncio.sleep(0.1)

    def restart(self, replica: Replica) -> None:
        """Start a stopped replica again on the same port."""
        replica.start()
        replica.wait_ready()

    def stop(self) -> None:
        for replica in self.replicas:
            replica.terminate()
        for worker in self.workers:
            worker.terminate()
        self.redis.stop(remove=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def _fields(env: dict[str, str]) -> dict[str, str]:
    """``SESSIONSTORE_*`` variables as `Settings` field names."""
    prefix = "SESSIONSTORE_"
    return {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
