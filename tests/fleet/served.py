"""A served fleet for tests: a private Redis and several `sessionstore serve` processes.

Each replica is a real child process (``python -m sessionstore serve``) on its
own port, logging to a file in the fleet's directory, stopped by pid.
"""

from __future__ import annotations

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

from sessionstore import LocalRedis
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


class ServedFleet:
    """A private Redis (AOF on, so it can be stopped and restarted on its port) and replicas."""

    def __init__(self, replicas: int, settings: dict[str, str]) -> None:
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

    def start(self) -> ServedFleet:
        try:
            self.redis.start()
            for replica in self.replicas:
                replica.start()
            for replica in self.replicas:
                replica.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, replica: Replica) -> None:
        """Start a stopped replica again on the same port."""
        replica.start()
        replica.wait_ready()

    def stop(self) -> None:
        for replica in self.replicas:
            replica.terminate()
        self.redis.stop(remove=False)
        shutil.rmtree(self.directory, ignore_errors=True)
